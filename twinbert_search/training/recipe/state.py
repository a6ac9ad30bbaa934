"""The runner: steps in order, each recorded with its wall time in OUT/recipe_state.json.

A rerun skips finished steps, so a killed run resumes where it stopped; `redo` forgets a
step and every step depending on it; `only` runs chosen steps (their inputs done), so an
independent step can run in a second process.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.provenance import cpu_model
from twinbert_search.training.recipe.adapt_step import step_adapt, step_adapt_in_domain
from twinbert_search.training.recipe.artifacts import STATE_FILE
from twinbert_search.training.recipe.candidates import step_candidates, step_index
from twinbert_search.training.recipe.config import RecipeConfig, config_dict
from twinbert_search.training.recipe.context import Context, read_json, write_json
from twinbert_search.training.recipe.ensemble import step_ensemble
from twinbert_search.training.recipe.evaluate import step_evaluate
from twinbert_search.training.recipe.ood import step_ood
from twinbert_search.training.recipe.scores import step_scores, step_teacher_rerank
from twinbert_search.training.recipe.served import step_served
from twinbert_search.training.recipe.students import step_students
from twinbert_search.training.recipe.teacher_step import step_teacher

__all__ = ["DEPENDS", "STATE_FILE", "STEPS", "STEP_NAMES", "Step", "machine", "run_recipe"]

log = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    """nproc and CPU model, for every figure's provenance."""
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform()}


StepFn = Callable[[Context], dict[str, Any]]


def _in_domain(step: StepFn) -> StepFn:
    """The step when in-domain adaptation is on, else a recorded skip."""

    def run(ctx: Context) -> dict[str, Any]:
        if not ctx.cfg.adapt_in_domain:
            return {"skipped": "adapt_in_domain is off"}
        return step(ctx)

    return run


def _if_ood(step: StepFn) -> StepFn:
    """The step when an out-of-domain collection is configured, else a recorded skip."""

    def run(ctx: Context) -> dict[str, Any]:
        if not ctx.cfg.ood_data:
            return {"skipped": "no out-of-domain collection (ood_data)"}
        return step(ctx)

    return run


@dataclass(frozen=True)
class Step:
    """One step of the recipe: its name (in recipe_state.json, `--until`, `--redo`), what it
    runs, and its direct inputs (`redo` also forgets every step depending on a redone one)."""

    name: str
    run: StepFn
    depends: tuple[str, ...] = ()


# The recipe, in order: the one list every name, order and dependency is read from.
STEPS: tuple[Step, ...] = (
    Step("index", step_index),
    Step("candidates", step_candidates, ("index",)),
    Step("teacher", step_teacher, ("candidates",)),
    Step("scores", step_scores, ("teacher",)),
    Step("ensemble", step_ensemble, ("scores",)),
    Step("students", step_students, ("ensemble",)),
    Step("adapt_in_domain", _in_domain(step_adapt_in_domain), ("students",)),
    Step("teacher_rerank", step_teacher_rerank, ("teacher",)),
    Step("served", step_served, ("students", "adapt_in_domain", "teacher_rerank")),
    Step("ood", _if_ood(step_ood), ("students", "adapt_in_domain", "teacher_rerank")),
    Step("adapt", _if_ood(step_adapt), ("ood",)),
    Step(
        "evaluate",
        step_evaluate,
        ("students", "teacher_rerank", "ensemble", "served", "ood", "adapt"),
    ),
)
STEP_NAMES = tuple(step.name for step in STEPS)
DEPENDS: dict[str, tuple[str, ...]] = {step.name: step.depends for step in STEPS}


def _dependents(name: str) -> set[str]:
    out = {name}
    changed = True
    while changed:
        changed = False
        for step, deps in DEPENDS.items():
            if step not in out and out.intersection(deps):
                out.add(step)
                changed = True
    return out


def _check_steps(names: Sequence[str]) -> None:
    for name in names:
        if name not in STEP_NAMES:
            raise ConfigurationError(f"unknown step {name!r} (steps: {', '.join(STEP_NAMES)})")


def run_recipe(
    cfg: RecipeConfig,
    *,
    until: str | None = None,
    redo: Sequence[str] = (),
    only: Sequence[str] = (),
    on_step: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the recipe; return the state.

    `until` stops after that step; `redo` forgets those steps and the steps depending on
    them, so they run again; `only` runs just those steps (their inputs must be done), so an
    independent step can run in a second process. The state file is re-read before each
    write, so such processes do not lose each other's steps.
    """
    _check_steps([*([until] if until else []), *redo, *only])
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state: dict[str, Any] = read_json(state_path) if state_path.is_file() else {"steps": {}}
    forget: set[str] = set().union(*(_dependents(n) for n in redo)) if redo else set()
    for name in forget:
        state["steps"].pop(name, None)
    state["config"] = config_dict(cfg)
    state["machine"] = machine()
    write_json(state_path, state)
    ctx = Context(cfg)
    for step in STEPS:
        name = step.name
        if name in state["steps"] or (only and name not in only):
            continue
        missing = [d for d in DEPENDS[name] if d not in state["steps"]]
        if missing:
            raise ConfigurationError(f"step {name} needs {', '.join(missing)} first")
        log.info("recipe step %s", name)
        t0 = time.perf_counter()
        result = step.run(ctx)
        entry = {
            "seconds": time.perf_counter() - t0,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "result": result,
        }
        state = read_json(state_path)
        state["steps"][name] = entry
        write_json(state_path, state)
        if on_step is not None:
            on_step(name, entry)
        if name == until:
            break
    return state
