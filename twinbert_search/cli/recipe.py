"""`twinbert-search recipe scifact`: the whole teacher -> students -> index -> table chain.

The main CLI registers the `recipe` group with one `add_command`; torch is imported only
inside the command body.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from twinbert_search.cli.options import (
    DIR,
    checkpoint_option,
    data_option,
    out_option,
    pseudo_queries_option,
    seed_option,
    validation_queries_option,
)

__all__ = ["recipe"]


@click.group()
def recipe() -> None:
    """End-to-end recipes: train, distil, index and evaluate in one resumable command."""


@recipe.command("scifact")
@data_option("BEIR folder (qrels/train.tsv, test.tsv).")
@out_option("Run directory (state, models, results).")
@click.option(
    "--index",
    "index_dir",
    type=DIR,
    default=None,
    help="An existing embedded index of the corpus by the base model, reused (else built).",
)
@click.option("--base-model", type=DIR, default=None, help="Base TwinBERT (default model).")
@checkpoint_option("HF checkpoint (all-MiniLM-L6-v2).")
@click.option("--teacher-steps", type=int, default=None)
@click.option("--student-steps", type=int, default=None)
@pseudo_queries_option(None)
@validation_queries_option(None)
@click.option(
    "--recall",
    type=click.Choice(["auto", "dense", "hybrid", "bm25"]),
    default=None,
    help="Rerank candidates (auto: the better Recall@100 on validation).",
)
@click.option(
    "--ood-data",
    type=DIR,
    default=None,
    help="An out-of-domain BEIR folder (e.g. CACM): every model zero-shot on it, and a student "
    "adapted to its corpus text; its qrels only score the final table.",
)
@click.option("--until", default=None, help="Stop after this step.")
@click.option("--redo", multiple=True, help="Run this step (and the later ones) again.")
@seed_option(None)
def scifact(
    data: Path,
    out: Path,
    index_dir: Path | None,
    base_model: Path | None,
    checkpoint: Path | None,
    teacher_steps: int | None,
    student_steps: int | None,
    pseudo_queries: int | None,
    validation_queries: int | None,
    recall: str | None,
    ood_data: Path | None,
    until: str | None,
    redo: tuple[str, ...],
    seed: int | None,
) -> None:
    """Teacher, TwinBERT-res and -cos students, index and quality table for SciFact.

    Writes OUT/results.json and OUT/results.md; rerunning resumes after the last finished
    step (OUT/recipe_state.json).
    """
    import logging

    from twinbert_search.training.recipe import (
        RESULTS_MD,
        RecipeConfig,
        render_markdown,
        run_recipe,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {
        "teacher_steps": teacher_steps,
        "student_steps": student_steps,
        "pseudo_queries": pseudo_queries,
        "validation_queries": validation_queries,
        "recall": recall,
        "seed": seed,
        "ood_data": None if ood_data is None else str(ood_data),
    }
    cfg = RecipeConfig(
        data=str(data),
        out=str(out),
        index=None if index_dir is None else str(index_dir),
        base_model=None if base_model is None else str(base_model),
        checkpoint=None if checkpoint is None else str(checkpoint),
        **{k: v for k, v in overrides.items() if v is not None},
    )

    def report(name: str, step: dict) -> None:
        click.echo(f"step {name}: {step['seconds']:.1f} s", err=True)

    state = run_recipe(cfg, until=until, redo=redo, on_step=report)
    if "evaluate" in state["steps"]:
        command = _command_line(click.get_current_context())
        (out / RESULTS_MD).write_text(render_markdown(state, command))
        click.echo((out / RESULTS_MD).read_text())
    else:
        done = {k: round(v["seconds"], 1) for k, v in state["steps"].items()}
        click.echo(json.dumps({"finished_steps": done}))


def _command_line(ctx: click.Context) -> str:
    """This invocation as a shell command (options given explicitly, in declaration order)."""
    words = ["twinbert-search", "recipe", ctx.info_name or "scifact"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == () or not param.opts:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            words += [param.opts[0], str(item)]
    return " ".join(shlex.quote(w) for w in words)


@recipe.command("explore")
@out_option("A recipe run directory (after `students`).")
def explore(out: Path) -> None:
    """Student variants, one change at a time, by validation nDCG@10 (OUT/explore.json)."""
    import logging

    from twinbert_search.training.recipe import STATE_FILE, config_from_dict, explore_students

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    state = json.loads((out / STATE_FILE).read_text())
    path = explore_students(config_from_dict(state["config"]))
    for name, row in json.loads(path.read_text()).items():
        click.echo(f"{name}\t{row['val_ndcg@10']:.4f}\t{row['seconds']:.0f} s")


@recipe.command("explore-teachers")
@out_option("A recipe run directory (after `candidates`).")
def explore_teachers_command(out: Path) -> None:
    """Teacher variants (more steps, a regression warm start) alone on validation
    (OUT/explore_teachers.json; models under OUT/teachers/)."""
    import logging

    from twinbert_search.training.recipe import (
        STATE_FILE,
        config_from_dict,
        explore_teachers,
        teacher_exploration,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    state = json.loads((out / STATE_FILE).read_text())
    path = explore_teachers(config_from_dict(state["config"]), teacher_exploration())
    for name, row in json.loads(path.read_text()).items():
        val = row["validation"]
        cells = [
            f"{s} {val[s]['teacher']['ndcg@10']:.4f} (recall {val[s]['recall']['ndcg@10']:.4f})"
            for s in ("all", "no_overlap")
            if s in val
        ]
        click.echo(f"{name}\t" + "\t".join(cells) + f"\t{row['seconds']:.0f} s")
