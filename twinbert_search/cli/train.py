"""Training commands: `teacher train`, `distill` and `export`, thin over the library calls.

The main CLI registers `teacher`, `distill` and `export` with one `add_command` each and maps
the project's errors to exit codes; these commands only raise them. torch is imported inside
the command bodies, so building the CLI stays cheap for the serving commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from twinbert_search.cli.options import (
    DIR,
    batch_size_option,
    candidates_option,
    checkpoint_option,
    data_option,
    int8_option,
    json_option,
    lr_option,
    model_option,
    out_option,
    pooling_option,
    progress_option,
    pseudo_queries_option,
    resume_option,
    seed_option,
    steps_option,
    student_options,
    validation_queries_option,
)
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import CrossingConfig
from twinbert_search.training.args import DistillArgs, TeacherArgs
from twinbert_search.training.conventions import checkpoint_pooling

if TYPE_CHECKING:
    from twinbert_search.training.modeling import TwinBertConfig

__all__ = ["distill", "export", "teacher"]


def _pooling(pooling: str, checkpoint: Path | None) -> str:
    """--pooling when given, else the checkpoint's own (an imported tower's), else its default."""
    source = click.get_current_context().get_parameter_source("pooling")
    return checkpoint_pooling(checkpoint, pooling, source is not click.core.ParameterSource.DEFAULT)


def _student_config(
    pooling: str,
    checkpoint: Path | None,
    crossing: str,
    combine: str,
    hidden: int,
    num_layers: int | None,
    max_query_length: int,
    max_doc_length: int,
) -> TwinBertConfig:
    """The student's shape from the `student_options` flags (torch is imported here only); the
    pooling is --pooling when given, else `checkpoint`'s own."""
    from twinbert_search.training.modeling import TwinBertConfig

    return TwinBertConfig(
        pooling=_pooling(pooling, checkpoint),
        num_layers=num_layers,
        max_query_length=max_query_length,
        max_doc_length=max_doc_length,
        crossing=CrossingConfig(type=crossing, combine=combine, hidden=hidden),
    )


@click.group()
def teacher() -> None:
    """Teachers for distillation: a trained cross-encoder, or an ensemble of towers."""


@teacher.command("train")
@data_option()
@out_option("Teacher directory to write.")
@checkpoint_option("HF BERT checkpoint [MiniLM].")
@steps_option()
@batch_size_option(8, "Queries per step.")
@lr_option(2e-5)
@click.option("--negatives", type=int, default=3, show_default=True, help="Per query and step.")
@click.option("--max-length", type=int, default=192, show_default=True, help="Pair tokens.")
@pooling_option("cls", ("cls", "mean"))
@click.option("--eval-every", type=int, default=200, show_default=True)
@validation_queries_option(50)
@seed_option()
@resume_option
@progress_option
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

    args = TeacherArgs(
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
    out_dir = train_teacher(args.validate())
    meta = json.loads((out_dir / "teacher.json").read_text())
    validation = meta.get("training", {}).get("validation") or {}
    for system, metrics in validation.items():
        ordered = sorted(metrics.items(), key=lambda kv: kv[0] != PRIMARY_METRIC)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in ordered)
        click.echo(f"validation {system}: {shown}")
    click.echo(f"teacher written to {out_dir}")


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """`A=B` values split at their last `=` (B absent: None)."""
    out = []
    for value in values:
        head, sep, tail = value.rpartition("=")
        out.append((head, tail) if sep and head else (value, None))
    return out


@teacher.command("towers")
@out_option("Teacher directory to write (ensemble.json).")
@click.option(
    "--tower",
    "towers",
    multiple=True,
    metavar="MODEL_DIR[=WEIGHT]",
    help="An imported tower (`models fetch`) whose cosine joins the ensemble [weight 1].",
)
@click.option(
    "--tower-index",
    "tower_indexes",
    multiple=True,
    metavar="MODEL_DIR=INDEX_DIR",
    help="An embedded index of the corpus built by that tower: its vectors are reused.",
)
@click.option("--bm25-weight", type=float, default=1.0, show_default=True)
@click.option(
    "--dense-weight",
    type=float,
    default=1.0,
    show_default=True,
    help="Weight of the student's own cosine.",
)
@click.option(
    "--tune-data",
    type=DIR,
    default=None,
    help="Tune the weights on this labelled BEIR folder's queries (validation, never test): "
    "needs --tune-qrels and --tune-index.",
)
@click.option("--tune-qrels", type=click.Path(exists=True, path_type=Path), default=None)
@click.option(
    "--tune-index",
    type=DIR,
    default=None,
    help="An embedded index of --tune-data's corpus by --model: the candidates reranked.",
)
@click.option(
    "--tune-tower-index",
    "tune_tower_indexes",
    multiple=True,
    metavar="MODEL_DIR=INDEX_DIR",
    help="A tower's embedded index of --tune-data's corpus: its vectors are reused.",
)
@model_option("The student whose candidates tuning reranks [the default model].")
@progress_option
@json_option
def teacher_towers(
    out: Path,
    towers: tuple[str, ...],
    tower_indexes: tuple[str, ...],
    bm25_weight: float,
    dense_weight: float,
    tune_data: Path | None,
    tune_qrels: Path | None,
    tune_index: Path | None,
    tune_tower_indexes: tuple[str, ...],
    model: Path | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Write a teacher that needs no labels: z-scored BM25, the student's cosine and the
    cosines of imported towers, weighted. `adapt --teacher OUT` distils it.

    With --tune-data the weights (from 0, 0.5, 1, 2 each) are chosen on that collection's
    validation queries: the weights that rerank the served candidates best (nDCG@10).
    """
    from twinbert_search.training.tower_teacher import TowerSpec, TowerTeacher, tune_on

    indexes = _tower_indexes(tower_indexes, "--tower-index")
    specs = []
    for tower, weight in _pairs(towers):
        if not (Path(tower) / "manifest.json").is_file():
            raise ConfigurationError(f"--tower {tower}: not a model directory (no manifest.json)")
        try:
            value = 1.0 if weight is None else float(weight)
        except ValueError:
            message = f"--tower {tower}: weight {weight!r} is not a number"
            raise ConfigurationError(message) from None
        specs.append(TowerSpec(tower, value, indexes.pop(str(Path(tower).resolve()), None)))
    if indexes:
        raise ConfigurationError(f"--tower-index {next(iter(indexes))}: no --tower of that model")
    teacher = TowerTeacher(tuple(specs), bm25_weight, dense_weight)
    tuned = None
    if tune_data is not None or tune_qrels is not None or tune_index is not None:
        if tune_data is None or tune_qrels is None or tune_index is None:
            raise ConfigurationError("tuning needs --tune-data, --tune-qrels and --tune-index")
        if "test" in tune_qrels.name:
            click.echo(
                f"warning: tuning on {tune_qrels}: weights chosen on test queries make that "
                "collection's scores no estimate; tune on training or validation queries",
                err=True,
            )
        teacher, tuned = tune_on(
            teacher,
            tune_data,
            tune_qrels,
            tune_index,
            out / "work",
            model=model,
            tower_indexes=_tower_indexes(tune_tower_indexes, "--tune-tower-index"),
            progress=progress,
        )
        (out / "tuning.json").write_text(json.dumps(tuned, indent=1) + "\n")
    teacher.save(out)
    if as_json:
        click.echo(json.dumps({"teacher": teacher.to_dict(), "tuning": tuned}))
        return
    if tuned is not None:
        click.echo(
            f"tuned on {tuned['queries']} queries of {tune_qrels}: ndcg@10 {tuned['ndcg@10']:.4f} "
            f"(given weights {tuned['given']['ndcg@10']:.4f}; the served recall "
            f"{tuned['recall_ndcg@10']:.4f})"
        )
    click.echo(f"tower teacher ({teacher.describe()}) written to {out}")


def _tower_indexes(values: tuple[str, ...], option: str) -> dict[str, str]:
    """MODEL_DIR=INDEX_DIR values by the model's absolute path."""
    indexes = {}
    for model, index in _pairs(values):
        if index is None:
            raise ConfigurationError(f"{option} {model}: expected MODEL_DIR=INDEX_DIR")
        indexes[str(Path(model).resolve())] = index
    return indexes


@click.command("distill")
@data_option()
@click.option("--teacher", "teacher_dir", type=DIR, required=True, help="Teacher directory.")
@out_option("Model directory to write.")
@checkpoint_option("Student HF checkpoint [MiniLM].")
@steps_option()
@batch_size_option(16, "Queries per step.")
@candidates_option(8, "Docs per query.")
@lr_option(3e-5)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option(
    "--loss",
    type=click.Choice(["soft_ce", "margin_mse"]),
    default="soft_ce",
    show_default=True,
)
@pseudo_queries_option(0)
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
@pooling_option("weighted", checkpoints_own=True)
@student_options
@click.option("--checkpoint-every", type=int, default=100, show_default=True)
@click.option("--cache", type=DIR, default=None, help="Teacher score cache [OUT/cache].")
@int8_option("Also export int8.", negatable=True)
@seed_option()
@resume_option
@progress_option
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
        pooling, checkpoint, crossing, combine, hidden, num_layers, max_query_length, max_doc_length
    )
    args = DistillArgs(
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
    out_dir = run_distill(args.validate())
    report = json.loads((out_dir / REPORT_FILE).read_text())
    for line in report["export"]:
        click.echo(line)
    click.echo(f"model written to {out_dir}")


@click.command("export")
@model_option("Saved model directory to re-export.", directory=True)
@checkpoint_option("HF checkpoint to build from.")
@out_option("Model directory (with --checkpoint).", required=False)
@pooling_option("mean", checkpoints_own=True)
@student_options
@int8_option("Also write int8 graphs.")
@seed_option()
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
            pooling,
            checkpoint,
            crossing,
            combine,
            hidden,
            num_layers,
            max_query_length,
            max_doc_length,
        )
        torch.manual_seed(seed)  # a residual crossing layer starts from random weights
        TwinBert.from_checkpoint(source, config).save(out, tokenizer_file(source))
        target = out
    report = export_model(target, int8=int8)
    for line in report.lines():
        click.echo(line)
    click.echo(f"exported {target}")
