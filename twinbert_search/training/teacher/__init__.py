"""The cross-encoder teacher, one module per job.

`model` (the cross-encoder and its directory), `hf` (a Hugging Face sequence-classification
checkpoint as a teacher), `scorer` (scoring pairs, reranking metrics), `loader`
(`load_teacher`: either kind of directory) and `train` (`train_teacher`, over the loop in
`training.teacher_loop`).
"""

from twinbert_search.training.teacher.hf import SequenceClassifier
from twinbert_search.training.teacher.loader import load_teacher
from twinbert_search.training.teacher.model import TEACHER_FILE, CrossEncoder
from twinbert_search.training.teacher.scorer import TeacherScorer, rerank_metrics
from twinbert_search.training.teacher.train import train_teacher

__all__ = [
    "TEACHER_FILE",
    "CrossEncoder",
    "SequenceClassifier",
    "TeacherScorer",
    "load_teacher",
    "rerank_metrics",
    "train_teacher",
]
