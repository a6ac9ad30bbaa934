"""Commands that write a store or a model: `index`, `delete`, `quantize`, `build-default-model`.

`index` reads a corpus (BEIR folder, JSONL or TSV) and writes it into either backend;
re-running it is incremental. The main CLI registers these and maps the errors they raise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twinbert_search.cli.options import (
    COUNT,
    ann_option,
    backend_options,
    batch_size_option,
    corpus_options,
    force_option,
    index_dir_option,
    json_option,
    layout_options,
    model_id_option,
    model_option,
    model_options,
    progress_option,
)
from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.factory import CLUSTERS, OPENSEARCH

if TYPE_CHECKING:
    from twinbert_search.ingest.corpus import IndexRun

__all__ = ["build_default", "delete", "index", "quantize"]

MAX_SKIPPED_LINES = 100  # skipped records named on stderr; --json lists them all


@click.command("index")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@backend_options
@model_options
@corpus_options
@click.option(
    "--codec",
    type=click.Choice(["float32", "float16", "int8"]),
    default=None,
    help="Stored vector codec (embedded; default float32, or what the store records).",
)
@ann_option(
    "auto",
    "ANN index. Embedded: auto (exact below 50k docs, else ivf2048,sq8, more lists "
    "above 5M), flat, ivf2048, "
    "ivf2048,sq8, ivf2048,fs, hnsw32, hnsw32,efc=100 ... OpenSearch: "
    "faiss:hnsw16:efc128:fp16:innerproduct (engine, hnsw<M>, efc<N>, encoding, space type). "
    "Elasticsearch: int8_hnsw16:efc128:innerproduct (hnsw, int8_hnsw, bbq_hnsw, ...<M>, "
    "efc<N>, space type).",
)
@layout_options
@batch_size_option(32)
@click.option(
    "--chunk-size",
    type=COUNT,
    default=512,
    show_default=True,
    help="Documents per store transaction (the most a killed run can lose).",
)
@click.option("--prune", is_flag=True, help="Delete stored documents absent from CORPUS.")
@click.option(
    "--skip-errors", is_flag=True, help="Skip malformed records (reported) instead of stopping."
)
@click.option(
    "--strict",
    is_flag=True,
    help="Treat empty documents (no title, no text) as malformed records; by default they are "
    "skipped and counted.",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="OpenSearch, Elasticsearch: build a new index behind --alias and move the alias when done "
    "(blue/green); re-running after a failure resumes the unfinished build.",
)
@click.option(
    "--delete-old", is_flag=True, help="With --rebuild: delete the old index after the switch."
)
@click.option(
    "--encode-in-cluster",
    is_flag=True,
    help="OpenSearch: the cluster encodes documents with the ML Commons model that "
    "`opensearch register-model --model` registered for --model (found by its fingerprint), "
    "or --model-id; --int8 if the int8 encoder was registered.",
)
@model_id_option("ML Commons model id for --encode-in-cluster (default: found by fingerprint).")
@click.option(
    "--openvino",
    is_flag=True,
    help="Encode documents with the calibrated static int8 graph on OpenVINO (build it with "
    "`twinbert-search quantize`; needs twinbert-search[openvino]). Faster than --int8.",
)
@progress_option
@json_option
def index(
    corpus: Path,
    backend: str,
    index_dir: Path | None,
    model: Path | None,
    int8: bool,
    threads: int | None,
    fmt: str,
    id_field: str,
    text_fields: tuple[str, ...],
    codec: str | None,
    ann: str | None,
    shards: int | None,
    replicas: int | None,
    batch_size: int,
    chunk_size: int,
    prune: bool,
    skip_errors: bool,
    strict: bool,
    rebuild: bool,
    delete_old: bool,
    encode_in_cluster: bool,
    model_id: str | None,
    openvino: bool,
    progress: bool,
    as_json: bool,
    **cluster_kwargs: Any,
) -> None:
    """Encode CORPUS (BEIR folder, corpus.jsonl, JSONL or TSV) into a store.

    Re-running is incremental: unchanged documents are skipped, changed ones re-encoded.
    With --backend opensearch or elasticsearch the index template and pipelines are created
    when missing.
    """
    from twinbert_search.ingest.corpus import index_corpus

    _check_index_flags(backend, rebuild, delete_old, encode_in_cluster, model_id, openvino)
    if encode_in_cluster and not model_id:
        model_id = _registered_model_id(model, int8, cluster_kwargs)
    run = index_corpus(
        corpus,
        backend=backend,
        index_dir=index_dir,
        model=model,
        int8=int8,
        threads=threads,
        openvino=openvino,
        fmt=fmt,
        id_field=id_field,
        text_fields=text_fields,
        codec=codec,
        ann=ann,
        shards=shards,
        replicas=replicas,
        batch_size=batch_size,
        chunk_size=chunk_size,
        prune=prune,
        skip_errors=skip_errors,
        strict=strict,
        rebuild=rebuild,
        delete_old=delete_old,
        model_id=model_id,
        progress=progress,
        **cluster_kwargs,
    )
    _echo_index_run(run, as_json)


def _check_index_flags(
    backend: str,
    rebuild: bool,
    delete_old: bool,
    encode_in_cluster: bool,
    model_id: str | None,
    openvino: bool = False,
) -> None:
    """ConfigurationError for flags that do not go together, before anything is loaded."""
    if backend not in CLUSTERS and rebuild:
        raise ConfigurationError("--rebuild needs --backend opensearch or elasticsearch")
    if backend != OPENSEARCH:
        flags = {"--encode-in-cluster": encode_in_cluster, "--model-id": model_id}
        used = [flag for flag, value in flags.items() if value]
        if used:
            raise ConfigurationError(f"{', '.join(used)} needs --backend opensearch")
    if delete_old and not rebuild:
        raise ConfigurationError("--delete-old goes with --rebuild")
    if model_id and not encode_in_cluster:
        raise ConfigurationError("--encode-in-cluster and --model-id go together")
    if openvino and encode_in_cluster:
        raise ConfigurationError(
            "--openvino encodes locally; it does not go with --encode-in-cluster"
        )


def _registered_model_id(model: Path | None, int8: bool, cluster_kwargs: dict[str, Any]) -> str:
    """The id of the deployed ML Commons model that `opensearch register-model` registered
    for this model directory, found by the fingerprint of the vectors it computes."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.models import resolve_model
    from twinbert_search.stores.opensearch import ml, translate_errors
    from twinbert_search.stores.opensearch.connection import connection_from_options

    model_dir = resolve_model(model, build_default=True)
    manifest = ModelManifest.load(model_dir)
    connection = connection_from_options(**cluster_kwargs)
    client = connection.client()
    try:
        with translate_errors(
            connection.safe_url, "find the registered document encoder", connection.username
        ):
            found = ml.find_model_of(client, manifest, quantized=int8)
    finally:
        client.close()
    register = "twinbert-search opensearch register-model --model " + str(model_dir)
    register += " --int8" if int8 else ""
    if found is None:
        raise ConfigurationError(
            f"no ML Commons model on {connection.safe_url} encodes documents as {model_dir} "
            f"does: register it with `{register}` (or pass --model-id)"
        )
    if found["model_state"] not in ml.SERVING_STATES:
        raise ConfigurationError(
            f"the ML Commons model {found['model_id']} registered for {model_dir} is "
            f"{found['model_state']}, not deployed: `{register}` deploys it"
        )
    click.echo(
        f"encoding in the cluster with ML Commons model {found['model_id']} "
        f"({found['name']}, found by fingerprint)",
        err=True,
    )
    return str(found["model_id"])


def _echo_index_run(run: IndexRun, as_json: bool) -> None:
    """Skipped records on stderr (the first MAX_SKIPPED_LINES), then the summary or JSON."""
    report = run.report
    for err in report.errors[:MAX_SKIPPED_LINES]:
        click.echo(f"skipped: {err}", err=True)
    if len(report.errors) > MAX_SKIPPED_LINES:
        more = len(report.errors) - MAX_SKIPPED_LINES
        click.echo(f"skipped: ... and {more} more (--json lists every one)", err=True)
    if as_json:
        click.echo(json.dumps(run.to_dict()))
        return
    click.echo(
        f"indexed {report.seen} documents into {run.location['where']}: {report.added} added, "
        f"{report.updated} updated, {report.unchanged} unchanged, {report.deleted} deleted, "
        f"{report.skipped()}; {report.docs_per_s:.1f} docs/s encoding, "
        f"{report.seconds:.1f}s total{_resent(report.resent)}"
    )


def _resent(resent: dict[str, int]) -> str:
    """`; 12 documents resent (12 throttled)`: the back-pressure a cluster run absorbed."""
    total = sum(resent.values())
    if not total:
        return ""
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(resent.items()) if n)
    return f"; {total} document{'s' if total > 1 else ''} resent ({kinds})"


@click.command("delete")
@click.argument("ids", nargs=-1, required=True)
@index_dir_option(required=True, help="Embedded store directory.")
def delete(ids: tuple[str, ...], index_dir: Path) -> None:
    """Delete documents by id from an embedded store."""
    from twinbert_search.stores.embedded import EmbeddedStore

    with EmbeddedStore.open(index_dir, read_only=False) as store:
        removed = store.delete(ids)
        store.finalize()
    click.echo(f"deleted {removed} of {len(ids)} ids")


@click.command("quantize")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@model_option("Exported model directory (default: the default model).")
@corpus_options
@click.option(
    "--docs", type=int, default=128, show_default=True, help="Calibration documents (the first)."
)
@click.option(
    "--alpha", type=float, default=0.5, show_default=True, help="SmoothQuant migration strength."
)
@force_option("Replace an existing graph (re-index its stores after).")
@json_option
def quantize(
    corpus: Path,
    model: Path | None,
    fmt: str,
    id_field: str,
    text_fields: tuple[str, ...],
    docs: int,
    alpha: float,
    force: bool,
    as_json: bool,
) -> None:
    """Build the static int8 document graph for `index --openvino`, calibrated on CORPUS.

    Calibrate on documents like the ones you will index: the first --docs of CORPUS are
    read. The graph goes into the model directory; the cosine of its vectors to the fp32
    graph's, on those documents, is printed.
    """
    from itertools import islice

    from twinbert_search.ingest.readers import read_corpus
    from twinbert_search.quantization import quantize_documents
    from twinbert_search.runtime.models import resolve_model

    if docs < 1:
        raise ConfigurationError(f"--docs must be positive, got {docs}")
    records = read_corpus(
        corpus, fmt=fmt, id_field=id_field, text_fields=text_fields, on_empty="skip"
    )
    texts = [d.encoding_text for d in islice(records, docs)]
    report = quantize_documents(
        resolve_model(model, build_default=True), texts, alpha=alpha, overwrite=force
    )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(
        f"wrote {report.path} (calibrated on {report.calibration_docs} documents, alpha "
        f"{report.alpha}); cosine to fp32 min {report.min_cosine:.4f} "
        f"mean {report.mean_cosine:.4f}"
    )


@click.command("build-default-model")
def build_default() -> None:
    """Build (once) and print the path of the default MiniLM-based TwinBERT."""
    from twinbert_search.runtime.models import resolve_model

    click.echo(str(resolve_model(None, build_default=True)))
