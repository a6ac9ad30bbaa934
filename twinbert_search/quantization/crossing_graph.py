"""The residual crossing layer as an int8 ONNX graph, for the rerank of many candidates.

numpy scores 1,000 candidates with one float32 product (1,000 x 384 by 384 x hidden) on
every core OpenBLAS finds. The same product in int8 (ONNX Runtime's dynamically quantized
MatMul, VNNI on x86) runs on one thread in about the time numpy takes on two, and leaves the
other core to the next request (BENCHMARKS.md). Only that product is quantized, its weights
per output channel; the folded tail (two vector products) stays float.

Written by `export --int8` into `onnx/crossing.int8.onnx` (manifest key `crossing_int8`),
for residual crossings that combine by max or mul: concat already moves the document half of
the product to ingest (`ResidualCrossing.precompute`), and cosine has no product to speed up.
Needs onnx and onnxruntime's quantization tools, no torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from twinbert_search.errors import ModelError
from twinbert_search.manifest import CROSSING_INT8_KEY, ModelManifest
from twinbert_search.quantization import quiet_quantizer
from twinbert_search.runtime.crossing import ResidualCrossing, load_crossing

COMBINE_OPS = {"max": "Max", "mul": "Mul"}
GRAPH = "onnx/crossing.int8.onnx"
PARITY_CANDIDATES = 1000


def supports_int8_graph(crossing: object) -> bool:
    """Whether `crossing` can be written as an int8 graph (residual, max or mul, folded)."""
    return (
        isinstance(crossing, ResidualCrossing)
        and crossing.combine in COMBINE_OPS
        and not crossing.output_relu
    )


def crossing_graph(crossing: ResidualCrossing) -> onnx.ModelProto:
    """The float graph: logits[n] = relu(combine(docs, query) W1 + b1) . v + x . wo + c."""
    if not supports_int8_graph(crossing):
        raise ModelError(
            "only residual crossings combining by max or mul (without output_relu) have a graph"
        )
    width, hidden = crossing.w1t.shape
    weights = {
        "w1": crossing.w1t,
        "b1": crossing.b1,
        "v": crossing.v.reshape(hidden, 1),
        "wo": crossing.wo.reshape(width, 1),
        "c": np.array([crossing.c], np.float32),
        "shape": np.array([-1], np.int64),
    }
    nodes = [
        helper.make_node(COMBINE_OPS[crossing.combine], ["docs", "query"], ["x"], name="combine"),
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="dense1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="dense1_bias"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "v"], ["from_hidden"], name="folded_tail"),
        helper.make_node("MatMul", ["x", "wo"], ["from_input"], name="skip"),
        helper.make_node("Add", ["from_hidden", "from_input"], ["sum"], name="add"),
        helper.make_node("Add", ["sum", "c"], ["column"], name="bias"),
        helper.make_node("Reshape", ["column", "shape"], ["logits"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "twinbert_residual_crossing",
        [
            helper.make_tensor_value_info("docs", TensorProto.FLOAT, ["candidates", width]),
            helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, width]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["candidates"])],
        [numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime releases older than this onnx
    onnx.checker.check_model(model)
    return model


def write_int8_graph(crossing: ResidualCrossing, path: str | Path) -> Path:
    """Write the crossing with its first dense layer quantized to int8 (per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, quiet_quantizer():
        fp32 = Path(tmp) / "crossing.onnx"
        onnx.save(crossing_graph(crossing), fp32)
        quantize_dynamic(
            str(fp32),
            str(path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=["dense1"],
        )
    return path


def parity(crossing: ResidualCrossing, path: str | Path, seed: int = 0) -> dict[str, float]:
    """Agreement of the int8 graph with the float crossing on random unit vectors."""
    from twinbert_search.runtime.crossing import OnnxCrossing

    rng = np.random.default_rng(seed)
    width = crossing.w1t.shape[0]
    docs = rng.standard_normal((PARITY_CANDIDATES, width)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    graph = OnnxCrossing.load(path)
    correlations, overlaps = [], []
    for query in docs[:8]:
        want, got = crossing.logits(query, docs), graph.logits(query, docs)
        correlations.append(float(np.corrcoef(want, got)[0, 1]))
        top_want, top_got = np.argsort(-want)[:10], np.argsort(-got)[:10]
        overlaps.append(len(set(top_want.tolist()) & set(top_got.tolist())) / 10)
    return {"min_correlation": min(correlations), "min_top10_overlap": min(overlaps)}


def export_int8_crossing(model_dir: str | Path) -> dict[str, float] | None:
    """Write the model's crossing as an int8 graph and record it in the manifest.

    Returns the parity figures, or None (and removes a stale graph's manifest entry) when
    the model's crossing has no such graph.
    """
    model_dir = Path(model_dir)
    manifest = ModelManifest.load(model_dir)
    crossing = load_crossing(model_dir, manifest.crossing, manifest.normalize)
    if not supports_int8_graph(crossing):
        if manifest.onnx.pop(CROSSING_INT8_KEY, None) is not None:
            manifest.save(model_dir)
        return None
    assert isinstance(crossing, ResidualCrossing)
    write_int8_graph(crossing, model_dir / GRAPH)
    manifest.onnx[CROSSING_INT8_KEY] = GRAPH
    manifest.save(model_dir)
    return parity(crossing, model_dir / GRAPH)
