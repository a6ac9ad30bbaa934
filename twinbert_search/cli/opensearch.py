"""`twinbert-search opensearch ...`: put the templates, register the encoder, show the status.

The connection flags are `options.opensearch_options`, the same set that index, search, eval
and serve take; `stores.opensearch.connection.store_from_options(**kwargs)` builds the store
from them. The main CLI registers the `opensearch` group and maps the errors it raises.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from twinbert_search.cli.options import (
    ann_option,
    force_option,
    int8_option,
    json_option,
    layout_options,
    model_id_option,
    model_option,
    opensearch_options,
    stack,
)
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.factory import fitting_index_options
from twinbert_search.stores.opensearch import assets, translate_errors
from twinbert_search.stores.opensearch.connection import (
    connection_from_options,
    store_from_options,
)


def _load_manifest(model: Path | None) -> tuple[Path, ModelManifest]:
    from twinbert_search.runtime.models import resolve_model

    model_dir = resolve_model(model, build_default=True)
    return model_dir, ModelManifest.load(model_dir)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _index_options(ann: str | None, shards: int | None, replicas: int | None) -> Any:
    overrides = {k: v for k, v in (("shards", shards), ("replicas", replicas)) if v is not None}
    return assets.IndexOptions.parse(ann or assets.IndexOptions().describe(), **overrides)


def _runnable(
    store: Any, ann: str | None, shards: int | None, replicas: int | None, **kwargs: Any
) -> Any:
    """The index options for `--ann` (auto when None) that the store's cluster can run."""
    given = None if ann in (None, "auto") else _index_options(ann, None, None)
    url = connection_from_options(**kwargs).safe_url
    fitted = fitting_index_options(store.client, url, given)
    overrides = {k: v for k, v in (("shards", shards), ("replicas", replicas)) if v is not None}
    return dataclasses.replace(fitted, **overrides)


ann_options = stack(
    ann_option(
        help="Index description, e.g. faiss:hnsw16:efc128:fp16:innerproduct "
        "(engine faiss|lucene, hnsw<M>, efc<ef_construction>, fp32|fp16|byte, space type).",
    ),
    layout_options,
)
"""How `put-templates` shapes the indices it creates: the k-NN field, shards and replicas."""


@click.group("opensearch")
def opensearch() -> None:
    """OpenSearch backend: templates, pipelines, the in-cluster encoder, status."""


@opensearch.command("put-templates")
@opensearch_options
@model_option("Model directory.")
@ann_options
@model_id_option("ML Commons model id: also put pipeline (b).")
@click.option(
    "--render-to",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the rendered JSON files here instead of sending them (no cluster needed).",
)
@json_option
def put_templates(
    model: Path | None,
    ann: str | None,
    shards: int | None,
    replicas: int | None,
    model_id: str | None,
    render_to: Path | None,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Create the index template, ingest pipelines and hybrid search pipeline for a model."""
    _, manifest = _load_manifest(model)
    options = _index_options(ann, shards, replicas)
    if render_to is not None:
        base = kwargs.get("alias") or kwargs.get("index") or assets.DEFAULT_BASE
        rendered = assets.render_defaults(
            manifest,
            options,
            assets.AssetNames(base),
            model_id=model_id or assets.MODEL_ID_PLACEHOLDER,
        )
        written = []
        for rel, body in rendered.items():
            path = render_to / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body, indent=2) + "\n")
            written.append(str(path))
        if as_json:
            _echo_json({"written": written})
        else:
            click.echo("\n".join(written))
        return
    with store_from_options(**kwargs, manifest=manifest, index_options=options) as store:
        store.index_options = _runnable(store, ann, shards, replicas, **kwargs)
        done = store.put_assets(manifest, model_id=model_id)
    if as_json:
        _echo_json(done)
    else:
        for name, what in done.items():
            click.echo(f"{name}: {what}")


@opensearch.command("register-model")
@opensearch_options
@model_option("Model directory.")
@int8_option("Package the int8 document encoder.")
@click.option("--name", "model_name", default=None, help="ML Commons model name.")
@click.option("--model-version", default=None, help="ML Commons model version string.")
@click.option("--model-group-id", default=None, help="Register into this model group.")
@click.option(
    "--model-url",
    default=None,
    help="Register by URL: the cluster downloads the zip from here (host the file "
    "written by --zip); default: upload it in chunks.",
)
@click.option(
    "--zip",
    "zip_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the model zip (default: inside the model directory).",
)
@click.option("--package-only", is_flag=True, help="Build the zip and print its metadata.")
@click.option("--no-deploy", is_flag=True, help="Register without deploying.")
@force_option("Register again even if this zip is registered.")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True)
@json_option
def register_model(
    model: Path | None,
    int8: bool,
    model_name: str | None,
    model_version: str | None,
    model_group_id: str | None,
    model_url: str | None,
    zip_path: Path | None,
    package_only: bool,
    no_deploy: bool,
    force: bool,
    wait_timeout: float,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Package the document encoder for ML Commons, register it and deploy it."""
    from twinbert_search.stores.opensearch import ml as opensearch_ml

    model_dir, _ = _load_manifest(model)
    package = opensearch_ml.build_model_package(
        model_dir, zip_path, name=model_name, version=model_version, quantized=int8
    )
    out: dict[str, Any] = {
        "name": package.name,
        "version": package.version,
        "zip": str(package.path),
        "sha256": package.sha256,
        "size_in_bytes": package.size_in_bytes,
        "embedding_dimension": package.dim,
        "model_fingerprint": package.vector_fingerprint,
    }
    if not package_only:
        connection = connection_from_options(**kwargs)
        client = connection.client()
        try:
            with translate_errors(connection.safe_url, "register the model", connection.username):
                registered = opensearch_ml.register_and_deploy(
                    client,
                    package,
                    url=model_url,
                    deploy=not no_deploy,
                    reuse=not force,
                    model_group_id=model_group_id,
                    timeout=wait_timeout,
                )
        finally:
            client.close()
        out.update(dataclasses.asdict(registered))
    if as_json:
        _echo_json(out)
    else:
        for key, value in out.items():
            click.echo(f"{key}: {value}")
        if "model_id" in out:
            click.echo(
                f"next: twinbert-search index DATA --backend opensearch --model {model_dir} "
                f"--encode-in-cluster{' --int8' if int8 else ''} (it finds this model by its "
                "fingerprint)"
            )


@opensearch.command("status")
@opensearch_options
def status(**kwargs: Any) -> None:
    """Cluster health, the index behind the alias, its model and assets (JSON)."""
    with store_from_options(**kwargs) as store:
        _echo_json(store.status())
