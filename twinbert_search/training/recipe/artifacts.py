"""Every file name the recipe reads or writes, in one place.

A run folder (OUT) resumes from these files, so their names and JSON layouts are the
on-disk format: change one and old runs no longer resume.
"""

from __future__ import annotations

__all__ = [
    "CE_SCORES",
    "CE_SERVED_SCORES",
    "CE_TEST_SCORES",
    "DOC_VECTORS",
    "ENSEMBLE_FILE",
    "EXPLORE_STUDENTS",
    "EXPLORE_TEACHERS",
    "INDEX_DIR",
    "OOD_CE",
    "OOD_DIR",
    "OOD_INDEX_DIR",
    "OOD_OWN",
    "OOD_SYSTEMS",
    "QUERIES",
    "QUERY_VECTORS",
    "RESULTS_JSON",
    "RESULTS_MD",
    "SERVED_RECALL",
    "STATE_FILE",
    "STUDENTS_DONE",
    "TEACHERS_DIR",
    "TEACHER_DIR",
    "TEACHER_ENSEMBLE",
    "TEACHER_PARITY",
    "WORK_DIR",
]

# OUT/
STATE_FILE = "recipe_state.json"  # the runner's record of finished steps
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
EXPLORE_STUDENTS = "explore.json"
EXPLORE_TEACHERS = "explore_teachers.json"
WORK_DIR = "work"
INDEX_DIR = "index"  # the base model's index, unless the run was given one
OOD_INDEX_DIR = "ood-index"
TEACHER_DIR = "teacher"  # the cross-encoder (`training.teacher.model` layout)
TEACHERS_DIR = "teachers"  # explored teacher variants, one folder each

# OUT/teacher/
# the ensemble `adapt --teacher` distils: `training.adapt` owns the name
from twinbert_search.training.adapt import FUSION_FILE as ENSEMBLE_FILE  # noqa: E402

TEACHER_PARITY = "onnx_parity.json"

# OUT/work/
QUERIES = "queries.json"  # `candidates`: every query with its recall lists
QUERY_VECTORS = "query_vectors.npy"
DOC_VECTORS = "doc_vectors.npy"
CE_SCORES = "ce_scores.json"  # `scores`: train, pseudo and validation candidates
CE_TEST_SCORES = "ce_test_scores.json"  # `teacher_rerank`: the test candidates, timed
TEACHER_ENSEMBLE = "teacher_ensemble.json"  # `ensemble`: the fusion weights and CE stats
STUDENTS_DONE = "students.json"
SERVED_RECALL = "served_recall.json"  # `served`: each student's own recall lists
CE_SERVED_SCORES = "ce_served_scores.json"

# OUT/work/ood/
OOD_DIR = "ood"
OOD_OWN = "own.json"
OOD_SYSTEMS = "systems.json"
OOD_CE = "ce.json"
