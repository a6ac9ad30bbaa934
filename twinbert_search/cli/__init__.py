"""The `twinbert-search` command line: thin commands over the Python API.

Errors are mapped to exit codes in exactly one place (`CLI.invoke`): a `TwinBertSearchError`
prints one line `error: ...` on stderr and exits with its `exit_code` (a `BulkIndexError` first
prints one `failed: ...` line per failed document). The same flag names mean the same thing on
every command (--backend, --index-dir, --model, --int8, --threads, --json, and OpenSearch's
--url, --index, --alias, --username, ...); `backends.py` turns them into a store or a searcher.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from twinbert_search import __version__
from twinbert_search.cli.bench import bench
from twinbert_search.cli.opensearch import opensearch, opensearch_options
from twinbert_search.cli.recipe import recipe
from twinbert_search.cli.serve import serve
from twinbert_search.cli.train import distill, export, teacher
from twinbert_search.errors import (
    BulkIndexError,
    ConfigurationError,
    InputError,
    TwinBertSearchError,
)
from twinbert_search.stores.factory import BACKENDS, EMBEDDED, OPENSEARCH


class CLI(click.Group):
    """Maps the package's errors to one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TwinBertSearchError as exc:
            if isinstance(exc, BulkIndexError):
                for item in exc.errors:
                    click.echo(f"failed: {_describe_failure(item)}", err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: work committed so far is kept; re-run to resume", err=True)
            sys.exit(130)


def _describe_failure(item: dict[str, Any]) -> str:
    """One failed bulk item on one line (items never hold the document's source)."""
    reason = " ".join(str(item.get("reason") or "").split())
    attempts = item.get("attempts", 1)
    return (
        f"{item.get('id')}: {item.get('status')} {item.get('type')}: {reason} "
        f"(index {item.get('index')}, {attempts} attempt{'s' if attempts != 1 else ''})"
    )


def index_dir_option(f):
    return click.option(
        "--index-dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Embedded store directory.",
    )(f)


def backend_options(f):
    """--backend, the embedded store's --index-dir and OpenSearch's connection flags."""
    f = opensearch_options(f)
    f = click.option(
        "--index-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Embedded store directory (needed by --backend embedded).",
    )(f)
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default=EMBEDDED,
        show_default=True,
        help="Where the vectors live: an embedded store directory, or an OpenSearch cluster.",
    )(f)


def model_options(f):
    f = click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")(f)
    f = click.option("--int8", is_flag=True, help="Use the int8 ONNX graphs.")(f)
    return click.option(
        "--model",
        type=click.Path(path_type=Path),
        default=None,
        help="Exported model directory (default: MiniLM-based TwinBERT, built once).",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(f)


def _parse_filters(values: tuple[str, ...]) -> dict[str, list[str]] | None:
    filters: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--filter expects FIELD=VALUE, got {item!r}", field="--filter")
        filters.setdefault(key, []).append(value)
    return filters or None


@click.group(cls=CLI)
@click.version_option(__version__, prog_name="twinbert-search")
def main() -> None:
    """TwinBERT retrieval: index documents, search with rerank, train and export models."""


@main.command()
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@backend_options
@model_options
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "tsv"]), default="auto")
@click.option("--id-field", default="_id", show_default=True)
@click.option("--text-fields", default="title,text", show_default=True, help="Comma-separated.")
@click.option(
    "--codec",
    type=click.Choice(["float32", "float16", "int8"]),
    default=None,
    help="Stored vector codec (embedded; default float32, or what the store records).",
)
@click.option(
    "--ann",
    default="auto",
    show_default=True,
    help="ANN index. Embedded: auto (exact below 50k docs, else ivf2048), flat, ivf2048, "
    "ivf2048,sq8, hnsw32, hnsw32,efc=100 ... OpenSearch: "
    "faiss:hnsw16:efc128:fp16:innerproduct (engine, hnsw<M>, efc<N>, encoding, space type).",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--chunk-size",
    type=int,
    default=512,
    show_default=True,
    help="Documents per store transaction (the most a killed run can lose).",
)
@click.option("--prune", is_flag=True, help="Delete stored documents absent from CORPUS.")
@click.option(
    "--skip-errors", is_flag=True, help="Skip bad records (reported) instead of stopping."
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="OpenSearch: build a new index behind --alias and move the alias when done "
    "(blue/green); re-running after a failure resumes the unfinished build.",
)
@click.option(
    "--delete-old", is_flag=True, help="With --rebuild: delete the old index after the switch."
)
@click.option(
    "--encode-in-cluster",
    is_flag=True,
    help="OpenSearch: the cluster encodes documents with the ML Commons model --model-id "
    "(see `opensearch register-model`); --int8 if the int8 encoder was registered.",
)
@click.option("--model-id", default=None, help="ML Commons model id for --encode-in-cluster.")
@click.option(
    "--openvino",
    is_flag=True,
    help="Encode documents with the calibrated static int8 graph on OpenVINO (build it with "
    "`twinbert-search quantize`; needs twinbert-search[openvino]). Faster than --int8.",
)
@click.option("--no-progress", is_flag=True)
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
    text_fields: str,
    codec: str | None,
    ann: str | None,
    batch_size: int,
    chunk_size: int,
    prune: bool,
    skip_errors: bool,
    rebuild: bool,
    delete_old: bool,
    encode_in_cluster: bool,
    model_id: str | None,
    openvino: bool,
    no_progress: bool,
    as_json: bool,
    **opensearch_kwargs: Any,
) -> None:
    """Encode CORPUS (BEIR folder, corpus.jsonl, JSONL or TSV) into a store.

    Re-running is incremental: unchanged documents are skipped, changed ones re-encoded.
    With --backend opensearch the index template and pipelines are created when missing.
    """
    from dataclasses import replace

    from twinbert_search.ingest.indexing import index_documents, index_in_cluster
    from twinbert_search.ingest.readers import read_corpus
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.models import resolve_model
    from twinbert_search.stores.factory import check_options, open_store
    from twinbert_search.stores.opensearch.ml import vector_fingerprint

    check_options(backend, index_dir=index_dir, **opensearch_kwargs)
    if backend != OPENSEARCH:
        flags = {
            "--rebuild": rebuild,
            "--encode-in-cluster": encode_in_cluster,
            "--model-id": model_id,
        }
        used = [flag for flag, value in flags.items() if value]
        if used:
            raise ConfigurationError(f"{', '.join(used)} needs --backend opensearch")
    if delete_old and not rebuild:
        raise ConfigurationError("--delete-old goes with --rebuild")
    if encode_in_cluster != bool(model_id):
        raise ConfigurationError("--encode-in-cluster and --model-id go together")
    if openvino and encode_in_cluster:
        raise ConfigurationError(
            "--openvino encodes locally; it does not go with --encode-in-cluster"
        )
    runtime = None
    if encode_in_cluster:  # no local encoding: the manifest is enough
        manifest = ModelManifest.load(resolve_model(model, build_default=True))
        fingerprint = vector_fingerprint(manifest, int8)
    else:
        runtime = TwinBertRuntime.load(
            resolve_model(model, build_default=True),
            int8=int8,
            threads=threads,
            document_graph="openvino-int8" if openvino else None,
        )
        manifest, fingerprint = runtime.manifest, runtime.fingerprint
    manifest = replace(manifest, fingerprint=fingerprint)  # the graph variant is recorded too
    errors: list[InputError] = []
    docs = read_corpus(
        corpus,
        fmt=fmt,
        id_field=id_field,
        text_fields=tuple(f.strip() for f in text_fields.split(",") if f.strip()),
        on_error="skip" if skip_errors else "raise",
        errors=errors,
    )
    out: dict[str, Any] = {}
    with open_store(
        backend,
        index_dir=index_dir,
        writable=True,
        dim=manifest.dim,
        codec=codec,
        ann=ann,
        manifest=manifest,
        **opensearch_kwargs,
    ) as store:
        if backend == OPENSEARCH:
            if not rebuild:  # refuse another model before touching the template and pipelines
                store.ensure_model(fingerprint)
            out["assets"] = store.put_assets(manifest, model_id=model_id)
            if rebuild:
                store.begin_rebuild(resume=True, delete_old=delete_old)
        if runtime is not None:
            report = index_documents(
                docs,
                store,
                runtime,
                batch_size=batch_size,
                chunk_size=chunk_size,
                prune=prune,
                progress=not no_progress,
            )
        else:
            report = index_in_cluster(
                docs,
                store,
                model_fingerprint=fingerprint,
                model_id=str(model_id),
                chunk_size=chunk_size,
                prune=prune,
                progress=not no_progress,
            )
        if backend == OPENSEARCH:
            info = store.info
            out.update(target=store.read_target, indices=info.extra.get("indices", []))
    report.errors = errors
    for err in errors:
        click.echo(f"skipped: {err}", err=True)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "backend": backend, **out}))
        return
    where = str(index_dir)
    if backend == OPENSEARCH:  # the alias and the index behind it, or the index
        target, indices = out["target"], out["indices"]
        where = target if indices in ([], [target]) else f"{target} ({', '.join(indices)})"
    click.echo(
        f"indexed {report.seen} documents into {where}: {report.added} added, "
        f"{report.updated} updated, {report.unchanged} unchanged, {report.deleted} deleted, "
        f"{len(errors)} skipped; {report.docs_per_s:.1f} docs/s encoding, "
        f"{report.seconds:.1f}s total"
    )


lexical_weight_option = click.option(
    "--lexical-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Fuse BM25 into the rerank with this weight (default: the model's tuned weight, "
    "if any; 0: off).",
)


@main.command()
@click.argument("query")
@backend_options
@model_options
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option(
    "--candidates",
    type=int,
    default=100,
    show_default=True,
    help="How many kNN candidates the crossing layer reranks.",
)
@click.option("--hybrid", is_flag=True, help="Fuse BM25 and kNN recall by reciprocal rank.")
@click.option("--no-rerank", is_flag=True, help="Recall only.")
@lexical_weight_option
@click.option("--filter", "filters", multiple=True, help="FIELD=VALUE on metadata; repeatable.")
@click.option("--explain", is_flag=True, help="Show both stages' scores and ranks, and timings.")
@json_option
def search(
    query: str,
    backend: str,
    index_dir: Path | None,
    model: Path | None,
    int8: bool,
    threads: int | None,
    k: int,
    candidates: int,
    hybrid: bool,
    no_rerank: bool,
    lexical_weight: float | None,
    filters: tuple[str, ...],
    explain: bool,
    as_json: bool,
    **opensearch_kwargs: Any,
) -> None:
    """Two-stage search: kNN recall, then the crossing-layer rerank."""
    from twinbert_search.search.factory import open_searcher

    searcher = open_searcher(
        backend, model=model, int8=int8, threads=threads, index_dir=index_dir, **opensearch_kwargs
    )
    with searcher.store:
        result = searcher.search(
            query,
            k,
            candidates,
            filters=_parse_filters(filters),
            rerank=not no_rerank,
            hybrid=hybrid,
            lexical_weight=lexical_weight,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    for hit in result.hits:
        title = (hit.document or {}).get("title") or (hit.document or {}).get("text", "")[:70]
        line = f"{hit.rank:>3}  {hit.score:.4f}  {hit.id}  {title}"
        if explain:
            rerank = "-" if hit.rerank_score is None else f"{hit.rerank_score:.4f}"
            line += (
                f"\n      recall #{hit.recall_rank} score {hit.recall_score:.4f}; rerank {rerank}"
            )
        click.echo(line)
    if explain:
        timing = ", ".join(f"{k} {v:.2f} ms" for k, v in result.timings_ms.items())
        click.echo(f"reranked={result.reranked} candidates={result.candidates}; {timing}")


@main.command("eval")
@backend_options
@model_options
@click.option("--queries", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--qrels", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--candidates", type=int, default=100, show_default=True)
@click.option("--recall-depth", type=int, default=1000, show_default=True)
@click.option("--hybrid", is_flag=True)
@lexical_weight_option
@click.option(
    "--run-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the reranked run (TREC format); the recall run goes beside it.",
)
@click.option("--no-progress", is_flag=True)
@json_option
def eval_cmd(
    backend: str,
    index_dir: Path | None,
    model: Path | None,
    int8: bool,
    threads: int | None,
    queries: Path,
    qrels: Path,
    candidates: int,
    recall_depth: int,
    hybrid: bool,
    lexical_weight: float | None,
    run_file: Path | None,
    no_progress: bool,
    as_json: bool,
    **opensearch_kwargs: Any,
) -> None:
    """nDCG@10, MRR@10, Recall@100/1000 for recall-only and reranked, and latency p50/p99."""
    from twinbert_search.evaluation.runfile import write_run
    from twinbert_search.evaluation.searcher import evaluate_searcher
    from twinbert_search.ingest.readers import read_qrels, read_queries
    from twinbert_search.search.factory import open_searcher
    from twinbert_search.stores.factory import check_options

    check_options(backend, index_dir=index_dir, **opensearch_kwargs)
    judgments = read_qrels(qrels)
    searcher = open_searcher(
        backend, model=model, int8=int8, threads=threads, index_dir=index_dir, **opensearch_kwargs
    )
    with searcher.store:
        report = evaluate_searcher(
            searcher,
            read_queries(queries),
            judgments,
            candidates=candidates,
            recall_depth=recall_depth,
            hybrid=hybrid,
            lexical_weight=lexical_weight,
            progress=not no_progress,
        )
    if run_file is not None:
        run_file.parent.mkdir(parents=True, exist_ok=True)
        write_run(run_file, report.runs["reranked"], "twinbert-rerank")
        write_run(
            run_file.with_suffix(".recall" + run_file.suffix),
            report.runs["recall"],
            "twinbert-recall",
        )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(f"{report.queries} queries; rerank of the top {candidates} recall candidates")
    names = list(report.recall)
    click.echo(f"{'':10}" + "".join(f"{n:>13}" for n in names))
    for label, values in (("recall", report.recall), ("reranked", report.reranked)):
        click.echo(f"{label:10}" + "".join(f"{values[n]:>13.4f}" for n in names))
    for stage, stats in report.latency.items():
        click.echo(f"latency {stage:8} p50 {stats['p50_ms']:.2f} ms  p99 {stats['p99_ms']:.2f} ms")


@main.command()
@click.argument("ids", nargs=-1, required=True)
@index_dir_option
def delete(ids: tuple[str, ...], index_dir: Path) -> None:
    """Delete documents by id from an embedded store."""
    from twinbert_search.stores.embedded import EmbeddedStore

    with EmbeddedStore.open(index_dir, read_only=False) as store:
        removed = store.delete(ids)
        store.finalize()
    click.echo(f"deleted {removed} of {len(ids)} ids")


@main.command()
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Exported model directory (default: the default model).",
)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "tsv"]), default="auto")
@click.option("--id-field", default="_id", show_default=True)
@click.option("--text-fields", default="title,text", show_default=True, help="Comma-separated.")
@click.option(
    "--docs", type=int, default=128, show_default=True, help="Calibration documents (the first)."
)
@click.option(
    "--alpha", type=float, default=0.5, show_default=True, help="SmoothQuant migration strength."
)
@click.option(
    "--force", is_flag=True, help="Replace an existing graph (re-index its stores after)."
)
@json_option
def quantize(
    corpus: Path,
    model: Path | None,
    fmt: str,
    id_field: str,
    text_fields: str,
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
    fields = tuple(f.strip() for f in text_fields.split(",") if f.strip())
    records = read_corpus(corpus, fmt=fmt, id_field=id_field, text_fields=fields)
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


@main.command("build-default-model")
def build_default() -> None:
    """Build (once) and print the path of the default MiniLM-based TwinBERT."""
    from twinbert_search.runtime.models import resolve_model

    click.echo(str(resolve_model(None, build_default=True)))


main.add_command(opensearch)
main.add_command(serve)
main.add_command(recipe)
main.add_command(bench)
main.add_command(teacher)
main.add_command(distill)
main.add_command(export)

if __name__ == "__main__":  # pragma: no cover
    main()
