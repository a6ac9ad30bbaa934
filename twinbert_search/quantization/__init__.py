"""Graph quantization that needs no torch: the static int8 document graph and the int8 crossing.

`document_graph`: `twinbert-search quantize` (static int8 QDQ for OpenVINO); `crossing_graph`:
the residual crossing as an int8 ONNX graph (written by `export --int8`).
"""

from twinbert_search.quantization.document_graph import (
    KEEP_FLOAT,
    QuantizeReport,
    calibration_batches,
    quantize_documents,
    quiet_quantizer,
    smooth_graph,
    static_int8_graph,
)

__all__ = [
    "KEEP_FLOAT",
    "QuantizeReport",
    "calibration_batches",
    "quantize_documents",
    "quiet_quantizer",
    "smooth_graph",
    "static_int8_graph",
]
