"""OpenVINO as a document-encoding runtime, behind the slice of onnxruntime's
`InferenceSession` that `OnnxEncoder` uses.

Optional (`pip install "twinbert-search[openvino]"`): the indexer uses it for the static int8
document graph (`twinbert_search.quantization`), which onnxruntime runs no faster than fp32
but OpenVINO runs as fused int8 kernels. Queries stay on onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError, ModelError


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoSession:
    """A graph compiled for OpenVINO's CPU plugin, in its default precision (bf16 for float
    layers on CPUs with AVX512_BF16 or AMX, else fp32)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ConfigurationError(
                'OpenVINO is not installed: pip install "twinbert-search[openvino]"'
            ) from None
        if not Path(path).is_file():
            raise ModelError(f"ONNX graph not found: {path}", path=str(path))
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        self._model = ov.Core().compile_model(str(path), "CPU", config)
        self._request = self._model.create_infer_request()
        self._output = self._model.outputs[0]

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=i.get_any_name()) for i in self._model.inputs]

    def get_outputs(self) -> list[SimpleNamespace]:
        dim = self._output.get_partial_shape()[-1].get_length()
        return [SimpleNamespace(name=self._output.get_any_name(), shape=[None, dim])]

    def run(self, _output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # A copy: the request reuses its output buffer on the next call.
        return [np.array(self._request.infer(feed)[self._output], copy=True)]
