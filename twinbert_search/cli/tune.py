"""`tune-hybrid`: choose a model's hybrid fusion (rrf or zscore, and BM25's weight) on
validation queries over an index, and with `--save` keep it in the model's manifest
(`extra.hybrid_fusion`), where `search --hybrid`, `eval --hybrid` and the service read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from twinbert_search.cli.options import COUNT, backend_options, json_option, model_options
from twinbert_search.errors import ConfigurationError

__all__ = ["tune_hybrid"]


@click.command("tune-hybrid")
@backend_options
@model_options
@click.option("--queries", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--qrels",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Validation judgments (never the test set's).",
)
@click.option(
    "--split-validation",
    is_flag=True,
    help="Tune on the recipe's validation queries carved from --qrels (training qrels: 10%, "
    "at most --validation-queries, seed 0), not on every judged query.",
)
@click.option("--validation-queries", type=COUNT, default=60, show_default=True)
@click.option(
    "--depth",
    type=COUNT,
    default=100,
    show_default=True,
    help="How deep each list is fused: the candidates a search recalls.",
)
@click.option("--save", is_flag=True, help="Record the choice in the --model's manifest.")
@json_option
def tune_hybrid(
    backend: str,
    index_dir: Path | None,
    model: Path | None,
    int8: bool,
    threads: int | None,
    queries: Path,
    qrels: Path,
    split_validation: bool,
    validation_queries: int,
    depth: int,
    save: bool,
    as_json: bool,
    **cluster_kwargs: Any,
) -> None:
    """Choose the hybrid fusion on validation queries by nDCG@10 (z-scores with equal weights
    kept unless another fusion beats them by more than chance, max-T sign-flip p <= 0.05)."""
    from twinbert_search.cli.search import check_store
    from twinbert_search.evaluation.hybrid_tuning import hybrid_lists, tune_hybrid_fusion
    from twinbert_search.ingest.readers import read_qrels, read_queries
    from twinbert_search.search.factory import open_searcher

    if save and model is None:
        raise ConfigurationError("--save writes into a model directory: give --model")
    judgments = read_qrels(qrels)
    texts = {q.id: q for q in read_queries(queries)}
    labelled = sorted(q for q, docs in judgments.items() if q in texts and any(docs.values()))
    if split_validation:
        from twinbert_search.training.data import split_validation as carve

        _, labelled = carve(labelled, max_queries=validation_queries, seed=0)
    searcher = open_searcher(
        backend, model=model, int8=int8, threads=threads, index_dir=index_dir, **cluster_kwargs
    )
    with searcher.store:
        check_store(searcher.store)
        lists = hybrid_lists(searcher, [texts[q] for q in labelled], depth)
    tuned = tune_hybrid_fusion(lists, judgments)
    tuned["qrels"] = qrels.name + (" (validation split)" if split_validation else "")
    if save:
        from twinbert_search.manifest import ModelManifest
        from twinbert_search.search.fusion import HYBRID_MANIFEST_KEY

        manifest = ModelManifest.load(model)  # type: ignore[arg-type]  # checked above
        manifest.extra[HYBRID_MANIFEST_KEY] = tuned
        manifest.save(model)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(tuned))
        return
    for row in tuned["grid"]:
        click.echo(f"{row['fusion']:32} ndcg@10 {row['ndcg@10']:.4f}")
    weights = tuned["weights"]
    click.echo(
        f"chosen on {tuned['queries']} queries: {tuned['method']} dense {weights['dense']:g} "
        f"bm25 {weights['bm25']:g} (ndcg@10 {tuned['ndcg@10']:.4f}; {tuned['baseline']} "
        f"{tuned['baseline_ndcg@10']:.4f}; best {tuned['best']} {tuned['best_ndcg@10']:.4f}, "
        f"p {tuned['p_value']:.3f})" + (f"; saved in {model}" if save else "")
    )
