"""Training commands: `teacher train`, `distill` and `export`, thin over the library calls.

The main CLI registers `teacher`, `distill` and `export` with one `add_command` each and maps
the project's errors to exit codes; these commands only raise them. torch is imported inside
the command bodies, so building the CLI stays cheap for the serving commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import CrossingConfig

__all__ = ["distill", "export", "teacher"]

_DIR = click.Path(path_type=Path, file_okay=False)
# Existence is checked by the library, which raises the project's errors with the path.
_data = click.option("--data", type=_DIR, required=True, help="BEIR folder (qrels/train.tsv).")
_seed = click.option("--seed", type=int, default=0, show_default=True)
_resume = click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from OUT/checkpoint when it exists.",
)
_progress = click.option("--progress/--no-progress", default=True, help="Progress bars.")
_crossing = click.option(
    "--crossing", type=click.Choice(["cosine", "residual"]), default="cosine", show_default=True
)
_combine = click.option(
    "--combine",
    type=click.Choice(["max", "concat", "mul"]),
    default="max",
    show_default=True,
    help="How the residual crossing joins query and document vectors.",
)
_hidden = click.option(
    "--hidden",
    type=int,
    default=CrossingConfig.hidden,
    show_default=True,
    help="Hidden size of the residual crossing (its rerank cost grows with it).",
)
_num_layers = click.option(
    "--num-layers", type=int, default=None, help="Keep only the first N transformer layers."
)
_max_query = click.option("--max-query-length", type=int, default=64, show_default=True)
_max_doc = click.option("--max-doc-length", type=int, default=256, show_default=True)


def _student_options(command):
    """The model-shape options shared by `distill` and `export --out` (in this order)."""
    for option in reversed((_crossing, _combine, _hidden, _num_layers, _max_query, _max_doc)):
        command = option(command)
    return command


def _student_config(
    pooling: str,
    crossing: str,
    combine: str,
    hidden: int,
    num_layers: int | None,
    max_query_length: int,
    max_doc_length: int,
):
    from twinbert_search.training.modeling import TwinBertConfig

    return TwinBertConfig(
        pooling=pooling,
        num_layers=num_layers,
        max_query_length=max_query_length,
        max_doc_length=max_doc_length,
        crossing=CrossingConfig(type=crossing, combine=combine, hidden=hidden),
    )


@click.group()
def teacher() -> None:
    """Cross-encoder teacher for distillation."""


@teacher.command("train")
@_data
@click.option("--out", type=_DIR, required=True, help="Teacher directory to write.")
@click.option("--checkpoint", type=_DIR, default=None, help="HF BERT checkpoint [MiniLM].")
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Queries per step.")
@click.option("--lr", type=float, default=2e-5, show_default=True)
@click.option("--negatives", type=int, default=3, show_default=True, help="Per query and step.")
@click.option("--max-length", type=int, default=192, show_default=True, help="Pair tokens.")
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default="cls", show_default=True)
@click.option("--eval-every", type=int, default=200, show_default=True)
@click.option("--validation-queries", type=int, default=50, show_default=True)
@_seed
@_resume
@_progress
def teacher_train(
    data: Path,
    out: Path,
    checkpoint: Path | None,
    steps: int,
    batch_size: int,
    lr: float,
    negatives: int,
    max_length: int,
    pooling: str,
    eval_every: int,
    validation_queries: int,
    seed: int,
    resume: bool,
    progress: bool,
) -> None:
    """Fine-tune a cross-encoder on DATA's train qrels with BM25 hard negatives."""
    from twinbert_search.evaluation.metrics import PRIMARY_METRIC
    from twinbert_search.training.teacher import train_teacher

    out_dir = train_teacher(
        data,
        out,
        checkpoint=checkpoint,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        negatives=negatives,
        max_length=max_length,
        pooling=pooling,
        seed=seed,
        eval_every=eval_every,
        validation_queries=validation_queries,
        resume=resume,
        progress=progress,
    )
    meta = json.loads((out_dir / "teacher.json").read_text())
    validation = meta.get("training", {}).get("validation") or {}
    for system, metrics in validation.items():
        ordered = sorted(metrics.items(), key=lambda kv: kv[0] != PRIMARY_METRIC)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in ordered)
        click.echo(f"validation {system}: {shown}")
    click.echo(f"teacher written to {out_dir}")


@click.command()
@_data
@click.option("--teacher", "teacher_dir", type=_DIR, required=True, help="Teacher directory.")
@click.option("--out", type=_DIR, required=True, help="Model directory to write.")
@click.option("--checkpoint", type=_DIR, default=None, help="Student HF checkpoint [MiniLM].")
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Queries per step.")
@click.option("--candidates", type=int, default=8, show_default=True, help="Docs per query.")
@click.option("--lr", type=float, default=3e-5, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option(
    "--loss",
    type=click.Choice(["soft_ce", "margin_mse"]),
    default="soft_ce",
    show_default=True,
)
@click.option("--pseudo-queries", type=int, default=0, show_default=True)
@click.option(
    "--recall-loss-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="In-batch-negatives loss on the tower vectors (keeps a residual student's kNN good).",
)
@click.option(
    "--label-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="Add the qrels' hard labels (listwise, per query's group) to the teacher's soft ones.",
)
@click.option(
    "--pooling",
    type=click.Choice(["mean", "weighted", "cls"]),
    default="weighted",
    show_default=True,
)
@_student_options
@click.option("--checkpoint-every", type=int, default=100, show_default=True)
@click.option("--cache", type=_DIR, default=None, help="Teacher score cache [OUT/cache].")
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also export int8.")
@_seed
@_resume
@_progress
def distill(
    data: Path,
    teacher_dir: Path,
    out: Path,
    checkpoint: Path | None,
    steps: int,
    batch_size: int,
    candidates: int,
    lr: float,
    temperature: float,
    loss: str,
    pseudo_queries: int,
    recall_loss_weight: float,
    label_weight: float,
    pooling: str,
    crossing: str,
    combine: str,
    hidden: int,
    num_layers: int | None,
    max_query_length: int,
    max_doc_length: int,
    checkpoint_every: int,
    cache: Path | None,
    int8: bool,
    seed: int,
    resume: bool,
    progress: bool,
) -> None:
    """Distil TEACHER into a TwinBERT student, then save and export it to OUT."""
    from twinbert_search.training.distill import REPORT_FILE
    from twinbert_search.training.distill import distill as run_distill

    config = _student_config(
        pooling, crossing, combine, hidden, num_layers, max_query_length, max_doc_length
    )
    out_dir = run_distill(
        data,
        teacher_dir,
        out,
        student_checkpoint=checkpoint,
        config=config,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        temperature=temperature,
        loss=loss,
        pseudo_queries=pseudo_queries,
        candidates_per_query=candidates,
        recall_loss_weight=recall_loss_weight,
        label_weight=label_weight,
        seed=seed,
        checkpoint_every=checkpoint_every,
        cache_dir=cache,
        int8=int8,
        resume=resume,
        progress=progress,
    )
    report = json.loads((out_dir / REPORT_FILE).read_text())
    for line in report["export"]:
        click.echo(line)
    click.echo(f"model written to {out_dir}")


@click.command()
@click.option("--model", type=_DIR, default=None, help="Saved model directory to re-export.")
@click.option("--checkpoint", type=_DIR, default=None, help="HF checkpoint to build from.")
@click.option("--out", type=_DIR, default=None, help="Model directory (with --checkpoint).")
@click.option(
    "--pooling",
    type=click.Choice(["mean", "weighted", "cls"]),
    default="mean",
    show_default=True,
)
@_student_options
@click.option("--int8", is_flag=True, help="Also write int8 graphs.")
@_seed
def export(
    model: Path | None,
    checkpoint: Path | None,
    out: Path | None,
    pooling: str,
    crossing: str,
    combine: str,
    hidden: int,
    num_layers: int | None,
    max_query_length: int,
    max_doc_length: int,
    int8: bool,
    seed: int,
) -> None:
    """Export ONNX graphs into --model, or build --out from --checkpoint and export it."""
    from twinbert_search.training.export import export_model

    if model is not None:
        if checkpoint is not None or out is not None:
            raise ConfigurationError("export: give --model, or --checkpoint with --out, not both")
        target = model
    else:
        if out is None:
            raise ConfigurationError("export: give --model DIR, or --out DIR to build a model")
        import torch

        from twinbert_search.runtime.models import default_checkpoint
        from twinbert_search.training.modeling import TwinBert
        from twinbert_search.training.tokenizer import tokenizer_file

        source = checkpoint if checkpoint is not None else default_checkpoint()
        config = _student_config(
            pooling, crossing, combine, hidden, num_layers, max_query_length, max_doc_length
        )
        torch.manual_seed(seed)  # a residual crossing layer starts from random weights
        TwinBert.from_checkpoint(source, config).save(out, tokenizer_file(source))
        target = out
    report = export_model(target, int8=int8)
    for line in report.lines():
        click.echo(line)
    click.echo(f"exported {target}")
