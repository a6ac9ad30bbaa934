"""The recipe's settings: every option of a run (recorded in results.json) and its students."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "RecipeConfig",
    "StudentSpec",
    "config_dict",
    "config_from_dict",
    "default_students",
    "exploration_grid",
    "in_domain_name",
    "ood_adapted_name",
    "served_specs",
    "teacher_exploration",
]


@dataclass
class StudentSpec:
    """One student to distil: crossing type, query-tower depth, pooling, loss temperature."""

    name: str
    crossing: str = "residual"
    combine: str = "max"
    num_layers: int | None = None
    pooling: str = "mean"
    temperature: float = 1.0
    pseudo: bool = True
    steps: int | None = None
    hidden: int | None = None  # residual hidden size; None: CrossingConfig's default
    # Weight of a listwise loss on the qrels' positives added to the distillation loss
    # (the true labels beside the teacher's soft ones); 0 distils from the teacher alone.
    label_weight: float = 0.0
    distill_weight: float = 1.0  # weight of the teacher's (KL) term; 0 trains on labels alone


def default_students() -> list[StudentSpec]:
    """The students a recipe run distils unless told otherwise."""
    # The validation winners of `exploration_grid` (figures in RESULTS.md): the residual
    # block over q * d (which starts as the cosine crossing), weighted pooling, train queries
    # only, and the qrels' labels beside the teacher's scores (KL + 2 x label loss). The
    # cosine student is the recall-only TwinBERT. The paper's max combination scored below
    # mul on validation and stays in the exploration grid, not a default: its time goes to
    # the out-of-domain collection and adaptation instead.
    residual = {"hidden": 128, "pooling": "weighted", "pseudo": False, "label_weight": 2.0}
    # The supervised baseline (no teacher): the bi-encoder's query tower fine-tuned on the
    # same train labels, over the same candidates and frozen document vectors.
    return [
        StudentSpec("twinbert-res", combine="mul", **residual),
        StudentSpec("twinbert-cos", "cosine", pooling="mean", label_weight=2.0),
        StudentSpec(
            "bi-encoder-ft",
            "cosine",
            pooling="mean",
            pseudo=False,
            label_weight=1.0,
            distill_weight=0.0,
        ),
    ]


@dataclass
class RecipeConfig:
    """Every setting of a recipe run (recorded in results.json)."""

    data: str
    out: str
    index: str | None = None  # an existing embedded index of the corpus by the base model
    base_model: str | None = None  # default: the default model (all-MiniLM-L6-v2 TwinBERT)
    checkpoint: str | None = None  # default: the all-MiniLM-L6-v2 checkpoint
    seed: int = 0
    validation_queries: int = 60
    recall: str = "auto"  # dense | hybrid | auto (the better Recall@100 on validation)
    rerank_depth: int = 100
    deep_depth: int = 1000
    # teacher
    # 600: the cross-encoder alone reranks validation better than at 300 steps
    # (`teacher_exploration`; figures in RESULTS.md); the best checkpoint is kept at a
    # multiple of `teacher_eval_every`.
    teacher_steps: int = 600
    teacher_queries_per_step: int = 3
    teacher_group: int = 8
    teacher_negative_depth: int = 30
    teacher_lr: float = 4e-5
    teacher_max_length: int = 128
    teacher_pooling: str = "mean"
    teacher_fused_weight: float = 1.0
    teacher_eval_every: int = 40
    teacher_val_depth: int = 10
    val_depth: int = 30
    teacher_int8: bool = True
    # Pseudo-queries (title, sentence, keyphrase; `training.corpus`) from the corpus for the
    # teacher, each with its hybrid recall list; a warm start of `teacher_warm_steps` steps
    # regresses the cross-encoder onto the fused BM25 + dense z-scores of their candidates
    # and the train queries' before the labels; `teacher_pseudo_labels` also puts them in
    # the label phase, their source document as the positive.
    teacher_pseudo_queries: int = 2000
    teacher_warm_steps: int = 0
    teacher_warm_lr: float | None = None  # None: teacher_lr
    teacher_pseudo_labels: bool = False
    timing_queries: int = 30  # test queries timed back to back, teacher vs students
    teacher_threads: int | None = None
    # distillation
    distill_candidates: int = 30  # teacher-scored candidates per train query (KL over them)
    pseudo_queries: int = 200
    pseudo_candidates: int = 8
    student_steps: int = 400
    student_batch: int = 16
    student_lr: float = 5e-5
    crossing_lr: float = 1e-3
    students: list[StudentSpec] = field(default_factory=default_students)
    max_query_length: int = 64
    # The served rerank fusion (`training.fusion`: the recall plus a weight of the crossing,
    # kept only past a significance test) is tuned per student on the validation queries of
    # this subset: "no_overlap" (positives never a trained query's: the queries a
    # model cannot have memorised, as a user's are) or "all"; fewer than
    # `fusion_min_queries` there falls back to all.
    fusion_subset: str = "no_overlap"
    fusion_min_queries: int = 10
    # Out of domain (a BEIR folder with test qrels, e.g. CACM): every model zero-shot, and
    # `adapt_student` adapted to its corpus text by `training.adapt` (never its labels).
    ood_data: str | None = None
    # `adapt_student` adapted to this run's own corpus text too (`adapt_in_domain` step),
    # its served fusion tuned as every student's (RESULTS.md: whether its crossing earns a
    # weight on the no-overlap validation queries).
    adapt_in_domain: bool = True
    adapt_student: str = "twinbert-res"
    adapt_pseudo_queries: int = 400
    adapt_candidates: int = 30
    adapt_steps: int = 300

    @property
    def out_dir(self) -> Path:
        return Path(self.out)


def config_dict(cfg: RecipeConfig) -> dict[str, Any]:
    """The config as plain data (recipe_state.json's `config`)."""
    return asdict(cfg)


def config_from_dict(data: Mapping[str, Any]) -> RecipeConfig:
    """The config a run recorded (`config_dict`), e.g. to explore students after it."""
    data = dict(data)
    students = [StudentSpec(**s) for s in data.pop("students", [])] or default_students()
    return RecipeConfig(students=students, **data)


def in_domain_name(cfg: RecipeConfig) -> str:
    """The student adapted to the run's own corpus (`adapt_in_domain`)."""
    return f"{cfg.adapt_student}-adapted"


def ood_adapted_name(cfg: RecipeConfig) -> str:
    """The student adapted to the out-of-domain corpus (`adapt`)."""
    return f"{cfg.adapt_student}-adapted-ood"


def served_specs(cfg: RecipeConfig) -> list[StudentSpec]:
    """The models the served rows cover: the students, then the in-domain adapted one."""
    specs = list(cfg.students)
    if cfg.adapt_in_domain:
        base = next((s for s in specs if s.name == cfg.adapt_student), None)
        if base is not None:
            specs.append(replace(base, name=in_domain_name(cfg)))
    return specs


def teacher_exploration() -> dict[str, dict[str, Any]]:
    """Teacher variants (RecipeConfig overrides) measured alone on validation by
    `recipe explore-teachers`: more steps, and the regression warm start onto fused
    BM25 + dense scores of the train and pseudo-queries before the labels."""
    return {
        "steps300": {"teacher_steps": 300, "teacher_warm_steps": 0, "teacher_eval_every": 20},
        "steps600": {"teacher_steps": 600, "teacher_warm_steps": 0, "teacher_eval_every": 20},
        "warm200+steps300": {
            "teacher_steps": 300,
            "teacher_warm_steps": 200,
            "teacher_eval_every": 20,
        },
    }


def exploration_grid(steps: int = 400) -> list[StudentSpec]:
    """One change at a time from the recipe's TwinBERT-res (residual/mul, hidden 128, weighted
    pooling, train queries, KL + 2 x label loss), at the recipe's 400 steps: the loss mix, the
    combination (the paper's max and concat against mul) and the cosine crossing.

    An earlier grid (query depth, pooling, temperature, pseudo-queries; RESULTS.md) fixed the
    other settings; it is in the history of this function.
    """
    base = {"hidden": 128, "pooling": "weighted", "pseudo": False, "steps": steps}
    return [
        StudentSpec("res-mul-label2", combine="mul", label_weight=2.0, **base),
        StudentSpec("res-mul-distill-only", combine="mul", **base),
        StudentSpec(
            "res-mul-labels-only", combine="mul", label_weight=1.0, distill_weight=0.0, **base
        ),
        StudentSpec("res-mul-label1", combine="mul", label_weight=1.0, **base),
        StudentSpec("res-mul-label4", combine="mul", label_weight=4.0, **base),
        StudentSpec("res-max-label2", combine="max", label_weight=2.0, **base),
        StudentSpec("res-concat-label2", combine="concat", label_weight=2.0, **base),
        StudentSpec("cos-mean-label2", "cosine", pooling="mean", label_weight=2.0, steps=steps),
    ]
