"""`twinbert-search adapt CORPUS --model M --out DIR`: a student adapted to a corpus, no labels.

Thin over `training.adapt.adapt`; torch is imported inside the command body, so building the
CLI stays cheap for the serving commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["adapt"]

_DIR = click.Path(path_type=Path, file_okay=False)


@click.command("adapt")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option("--model", type=_DIR, required=True, help="The student to adapt (a model dir).")
@click.option("--out", type=_DIR, required=True, help="Where the adapted model goes.")
@click.option(
    "--teacher",
    type=_DIR,
    required=True,
    help="A teacher directory (`teacher train`, the recipe's) or any local Hugging Face "
    "sequence-classification checkpoint (config.json, weights, tokenizer.json).",
)
@click.option(
    "--teacher-alone",
    is_flag=True,
    help="Distil the teacher's logits alone, not the ensemble its directory records "
    "(ensemble.json: the recipe's cross-encoder + BM25 + cosine).",
)
@click.option(
    "--index-dir",
    type=_DIR,
    default=None,
    help="An embedded index of CORPUS by --model: its stored vectors are reused.",
)
@click.option("--pseudo-queries", type=int, default=400, show_default=True)
@click.option(
    "--candidates",
    type=int,
    default=30,
    show_default=True,
    help="Hybrid-recall candidates per pseudo-query, all scored by the teacher.",
)
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Queries per step.")
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option(
    "--learn-documents",
    is_flag=True,
    help="The document tower learns too (a full TwinBERT); the adapted model then needs an "
    "index of its own.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from OUT's caches and checkpoint when they exist.",
)
@click.option("--progress/--no-progress", default=True, help="Progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def adapt(
    corpus: Path,
    model: Path,
    out: Path,
    teacher: Path,
    teacher_alone: bool,
    index_dir: Path | None,
    pseudo_queries: int,
    candidates: int,
    steps: int,
    batch_size: int,
    lr: float,
    learn_documents: bool,
    seed: int,
    resume: bool,
    progress: bool,
    as_json: bool,
) -> None:
    """Adapt a student to CORPUS (a BEIR folder or corpus.jsonl) from its text alone.

    Pseudo-queries from the corpus (titles, sentences, keyphrases), the student's own hybrid
    recall for each, the teacher's scores of every candidate, and distillation. Resumable:
    rerun the same command to continue. Ends with a summary of what it trained on.
    """
    from twinbert_search.training.adapt import adapt as run_adapt

    report = run_adapt(
        corpus,
        model,
        out,
        teacher=teacher,
        use_teacher_fusion=not teacher_alone,
        index_dir=index_dir,
        pseudo_queries=pseudo_queries,
        candidates=candidates,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        learn_documents=learn_documents,
        seed=seed,
        resume=resume,
        progress=progress,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)
