"""The SciFact recipe: teacher, distilled TwinBERT students, index and quality table, on CPU.

One call runs the whole chain, step by step, each step recording its wall time in
`OUT/recipe_state.json`; a rerun skips finished steps, so a killed run resumes where it
stopped. Steps:

1. `index`       the default model's embedded index of the corpus (reused when given)
2. `candidates`  query vectors, BM25 scores, recall lists (dense, BM25, hybrid RRF); the
                 teacher's pseudo-queries (`training.corpus`); validation and test queries
                 flagged by overlap with the training positives
3. `teacher`     a cross-encoder fine-tuned from the default checkpoint: optionally a warm start
                 regressing onto fused BM25 + dense scores (train and pseudo-queries), then a
                 listwise loss on the labels (positive vs BM25 + dense hard negatives) plus a KL
                 term towards the fused ranking, checkpoint picked on a validation split
                 carved from the train queries
4. `scores`      cross-encoder logits for the validation and distillation candidates
5. `ensemble`    the teacher actually distilled: cross-encoder, BM25 and bi-encoder scores
                 fused with weights tuned on the validation split (weights may zero out the
                 cross-encoder; the table names what won)
6. `students`    TwinBERT-res and TwinBERT-cos with a FROZEN document tower (the default
                 model's), so the index's stored vectors are the students' document vectors:
                 only query towers and crossing layers learn, from the teacher's scores; the
                 supervised baseline (the bi-encoder's query tower on the labels alone); each
                 student's served rerank fusion tuned on no-overlap validation queries
   `adapt_in_domain` `adapt_student` adapted to the run's own corpus text (`training.adapt`),
                 its served fusion tuned like the students'
7. `teacher_rerank` the cross-encoder on the test queries' top candidates, timed per query
8. `served`      each student as a search serves it: its own query vector recalls (hybrid with
                 BM25) and reranks; the teacher scores those candidates too
9. `ood`         with `ood_data` (e.g. CACM): every model zero-shot on another collection
10. `adapt`      with `ood_data`: a student adapted to that corpus's text (`training.adapt`)
11. `evaluate`   every row on the same test candidates, split by overlap (no-overlap first),
                 the served rows, the out-of-domain rows; results.json (results.md: CLI)

Scores are z-normalised per query over its recall candidates (BM25, cosine) or globally (the
cross-encoder logit), so the fusion weights are comparable across queries.

Package map, one module per step: `config` (settings), `context` (what steps read),
`artifacts` (every file name of a run folder), `records` (the typed records steps pass:
queries and their recall lists, teacher scores, the ensemble), `jsonio` (atomic JSON),
`candidates` (1, 2), `teacher_step` (3, driving `training.teacher_loop.fit_teacher`),
`scores` (4, 7), `ensemble` (5), `students` (6, driving `training.student_loop.fit_student`),
`served` (8), `ood` (9), `adapt_step` (6, 10), `evaluate` (11), `signals` (the served lists
and fusion signals), `timing`, `report` (results.md) and `state` (the runner and `STEPS`,
the one list of step names, order and dependencies).
"""

from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.training.recipe.artifacts import RESULTS_JSON, RESULTS_MD, STATE_FILE
from twinbert_search.training.recipe.config import (
    RecipeConfig,
    StudentSpec,
    config_from_dict,
    default_students,
    exploration_grid,
    teacher_exploration,
)
from twinbert_search.training.recipe.report import render_markdown
from twinbert_search.training.recipe.state import DEPENDS, STEP_NAMES, STEPS, run_recipe
from twinbert_search.training.recipe.students import explore_students, student_loss
from twinbert_search.training.recipe.teacher_step import explore_teachers
from twinbert_search.training.recipe.timing import block_timing

__all__ = [
    "DEPENDS",
    "RESULTS_JSON",
    "RESULTS_MD",
    "STATE_FILE",
    "STEPS",
    "STEP_NAMES",
    "RecipeConfig",
    "StudentSpec",
    "block_timing",
    "config_from_dict",
    "default_students",
    "exploration_grid",
    "explore_students",
    "explore_teachers",
    "lexical_fusion",
    "render_markdown",
    "run_recipe",
    "student_loss",
    "teacher_exploration",
]
