"""`twinbert-search adapt CORPUS --model M --out DIR`: a student adapted to a corpus, no labels.

Thin over `training.adapt.adapt`; torch is imported inside the command body, so building the
CLI stays cheap for the serving commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from twinbert_search.cli.options import (
    DIR,
    batch_size_option,
    candidates_option,
    index_dir_option,
    json_option,
    lr_option,
    model_option,
    out_option,
    progress_option,
    pseudo_queries_option,
    resume_option,
    seed_option,
    steps_option,
)
from twinbert_search.training.args import AdaptArgs

__all__ = ["adapt"]


@click.command("adapt")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@model_option("The student to adapt (a model directory).", directory=True)
@out_option("Where the adapted model goes.")
@click.option(
    "--teacher",
    "teacher_dir",
    type=DIR,
    required=True,
    help="A teacher directory (`teacher train`, the recipe's, or `teacher towers`: BM25 and "
    "imported towers, no labels) or any local Hugging Face sequence-classification "
    "checkpoint (config.json, weights, tokenizer.json).",
)
@click.option(
    "--teacher-alone",
    is_flag=True,
    help="Distil the teacher's logits alone, not the ensemble its directory records "
    "(ensemble.json: the recipe's cross-encoder + BM25 + cosine).",
)
@index_dir_option(help="An embedded index of CORPUS by --model: its stored vectors are reused.")
@pseudo_queries_option(400)
@candidates_option(30, "Hybrid-recall candidates per pseudo-query, all scored by the teacher.")
@steps_option(300)
@batch_size_option(16, "Queries per step.")
@lr_option(5e-5)
@click.option(
    "--learn-documents",
    is_flag=True,
    help="The document tower learns too (a full TwinBERT); the adapted model then needs an "
    "index of its own.",
)
@seed_option()
@resume_option
@progress_option
@json_option
def adapt(
    corpus: Path,
    model: Path | None,
    out: Path,
    teacher_dir: Path,
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
    from twinbert_search.errors import ConfigurationError
    from twinbert_search.training.adapt import adapt as run_adapt

    if model is None:
        raise ConfigurationError("adapt needs --model, the student to adapt")

    args = AdaptArgs(
        corpus,
        model,
        out,
        teacher=teacher_dir,
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
    report = run_adapt(args.validate())
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)
