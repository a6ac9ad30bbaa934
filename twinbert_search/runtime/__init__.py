"""The serving path: onnxruntime and numpy only. Nothing here may import torch."""

from twinbert_search.runtime.crossing import CosineCrossing, ResidualCrossing, load_crossing
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.runtime.tokenization import TextTokenizer

__all__ = [
    "CosineCrossing",
    "ResidualCrossing",
    "TextTokenizer",
    "TwinBertRuntime",
    "load_crossing",
]
