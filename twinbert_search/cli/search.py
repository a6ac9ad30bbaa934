"""Commands that read a store: `search` (one query) and `eval` (a query set against qrels).

Both open a searcher through `search.factory.open_searcher` from the shared flags, so they
take the same store and model flags as `index` and `serve`, and both refuse a store with no
documents and warn (one line on stderr) when its last indexing run did not complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twinbert_search.cli.options import (
    COUNT,
    backend_options,
    candidates_option,
    filter_option,
    hybrid_fusion_options,
    hybrid_option,
    json_option,
    k_option,
    lexical_weight_option,
    model_options,
    progress_option,
)

if TYPE_CHECKING:
    from twinbert_search.evaluation.searcher import EvalReport
    from twinbert_search.search.fusion import HybridFusion
    from twinbert_search.stores.base import VectorStore

__all__ = ["eval_cmd", "search"]


def check_store(store: VectorStore) -> None:
    """StoreError when the store is empty; a warning line when its indexing is unfinished."""
    from twinbert_search.search.factory import incomplete_warning, require_documents

    require_documents(store)
    warning = incomplete_warning(store)
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)


@click.command("search")
@click.argument("query")
@backend_options
@model_options
@k_option
@candidates_option(help="How many kNN candidates the crossing layer reranks.")
@hybrid_option(
    "Fuse BM25 and kNN recall: by the engine's reciprocal rank where it fuses, else by the "
    "model's hybrid fusion (--explain says which ran)."
)
@hybrid_fusion_options
@click.option("--no-rerank", is_flag=True, help="Recall only.")
@lexical_weight_option
@filter_option
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
    hybrid_fusion: HybridFusion | None,
    no_rerank: bool,
    lexical_weight: float | None,
    filters: dict[str, list[str]] | None,
    explain: bool,
    as_json: bool,
    **cluster_kwargs: Any,
) -> None:
    """Two-stage search: kNN recall, then the crossing-layer rerank."""
    from twinbert_search.search.factory import open_searcher

    searcher = open_searcher(
        backend,
        model=model,
        int8=int8,
        threads=threads,
        index_dir=index_dir,
        hybrid_fusion=hybrid_fusion,
        **cluster_kwargs,
    )
    with searcher.store:
        check_store(searcher.store)
        result = searcher.search(
            query,
            k,
            candidates,
            filters=filters,
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
        fusion = (
            f" hybrid_fusion={result.hybrid_fusion} hybrid_method={result.hybrid_method}"
            if result.hybrid_fusion
            else ""
        )
        click.echo(f"reranked={result.reranked} candidates={result.candidates}{fusion}; {timing}")


@click.command("eval")
@backend_options
@model_options
@click.option("--queries", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--qrels", required=True, type=click.Path(exists=True, path_type=Path))
@candidates_option()
@click.option("--recall-depth", type=COUNT, default=1000, show_default=True)
@hybrid_option()
@hybrid_fusion_options
@lexical_weight_option
@click.option(
    "--run-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the reranked run (TREC format); the recall run goes beside it.",
)
@click.option(
    "--train-qrels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The qrels a model was trained on: every metric is split into the queries whose "
    "positives were training positives (overlap) and the rest (no-overlap, the headline).",
)
@progress_option
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
    hybrid_fusion: HybridFusion | None,
    lexical_weight: float | None,
    run_file: Path | None,
    train_qrels: Path | None,
    progress: bool,
    as_json: bool,
    **cluster_kwargs: Any,
) -> None:
    """nDCG@10, MRR@10, Recall@100/1000 for recall-only and reranked side by side, with their
    difference (and whether the rerank loses to its recall), and latency p50/p99."""
    from twinbert_search.evaluation.coverage import coverage_warning
    from twinbert_search.evaluation.searcher import evaluate_searcher
    from twinbert_search.ingest.readers import read_qrels, read_queries
    from twinbert_search.search.factory import open_searcher
    from twinbert_search.stores.factory import check_options

    check_options(backend, index_dir=index_dir, **cluster_kwargs)
    judgments = read_qrels(qrels)
    searcher = open_searcher(
        backend,
        model=model,
        int8=int8,
        threads=threads,
        index_dir=index_dir,
        hybrid_fusion=hybrid_fusion,
        **cluster_kwargs,
    )
    with searcher.store:
        check_store(searcher.store)
        coverage = coverage_warning(searcher.store, judgments)
        if coverage is not None:
            click.echo(f"warning: {coverage}", err=True)
        report = evaluate_searcher(
            searcher,
            read_queries(queries),
            judgments,
            candidates=candidates,
            recall_depth=recall_depth,
            hybrid=hybrid,
            lexical_weight=lexical_weight,
            progress=progress,
        )
    if run_file is not None:
        _write_runs(report, run_file)
    split = None
    if train_qrels is not None:
        from twinbert_search.evaluation.overlap import stage_split

        split = stage_split(judgments, report.runs, read_qrels(train_qrels))
    if as_json:
        click.echo(json.dumps(_eval_payload(report, split)))
    else:
        _echo_eval_tables(report, split, candidates)


def _write_runs(report: EvalReport, run_file: Path) -> None:
    """The reranked run at `run_file`, the recall run beside it (`<name>.recall<suffix>`)."""
    from twinbert_search.evaluation.runfile import write_run

    run_file.parent.mkdir(parents=True, exist_ok=True)
    write_run(run_file, report.runs["reranked"], "twinbert-rerank")
    write_run(
        run_file.with_suffix(".recall" + run_file.suffix),
        report.runs["recall"],
        "twinbert-recall",
    )


def _eval_payload(report: EvalReport, split: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """`eval --json`: the report, the rerank's difference to recall, and the overlap split."""
    from twinbert_search.evaluation.compare import rerank_losses
    from twinbert_search.evaluation.metrics import PRIMARY_METRIC

    payload = report.to_dict()
    payload["difference"] = {
        m: round(report.reranked[m] - report.recall[m], 4) for m in report.recall
    }
    payload["rerank_loses"] = bool(rerank_losses(report.recall, report.reranked, (PRIMARY_METRIC,)))
    if split is not None:
        payload["overlap_split"] = _rounded(split)
    return payload


def _echo_eval_tables(
    report: EvalReport, split: dict[str, dict[str, Any]] | None, candidates: int
) -> None:
    """The recall/reranked tables (one per overlap subset with --train-qrels), then latency."""
    from twinbert_search.evaluation.compare import format_stage_table

    click.echo(f"{report.queries} queries; rerank of the top {candidates} recall candidates")
    if split is None:
        tables = [("", report.recall, report.reranked)]
    else:
        titles = {
            "no_overlap": "no-overlap queries (no positive was a training positive): the headline",
            "overlap": "overlap queries (a positive was a training positive)",
            "all": "all queries",
        }
        tables = [
            (f"{titles[s]}: {split[s]['queries']}", split[s]["recall"], split[s]["reranked"])
            for s in ("no_overlap", "overlap", "all")
            if s in split
        ]
    for title, recall_metrics, reranked_metrics in tables:
        for line in format_stage_table(recall_metrics, reranked_metrics, title=title):
            click.echo(line)
    for stage, stats in report.latency.items():
        click.echo(f"latency {stage:8} p50 {stats['p50_ms']:.2f} ms  p99 {stats['p99_ms']:.2f} ms")


def _rounded(split: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        subset: {
            k: v if k == "queries" else {m: round(x, 4) for m, x in v.items()}
            for k, v in row.items()
        }
        for subset, row in split.items()
    }
