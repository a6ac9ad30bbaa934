"""The int8 crossing graph: the same logits as the numpy crossing, written by export --int8."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import build_tiny_model
from twinbert_search.errors import ModelError
from twinbert_search.manifest import CROSSING_INT8_KEY, CrossingConfig, ModelManifest
from twinbert_search.quantization.crossing_graph import (
    crossing_graph,
    export_int8_crossing,
    supports_int8_graph,
    write_int8_graph,
)
from twinbert_search.runtime.crossing import (
    CosineCrossing,
    OnnxCrossing,
    ResidualCrossing,
)
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.training.modeling import TwinBert

DIM, HIDDEN = 64, 32
REPO = Path(__file__).resolve().parents[2]
TEXTS = ["star", "what does the planet orbit", "the heart and the blood cell of a virus", "moon"]


def residual(combine: str, output_relu: bool = False, seed: int = 0) -> ResidualCrossing:
    rng = np.random.default_rng(seed)
    width = 2 * DIM if combine == "concat" else DIM

    def dense(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    weights = {
        "dense1.weight": dense(HIDDEN, width),
        "dense1.bias": (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
        "dense2.weight": dense(width, HIDDEN),
        "dense2.bias": (0.1 * rng.standard_normal(width)).astype(np.float32),
        "out.weight": dense(1, width),
        "out.bias": np.array([0.2], np.float32),
    }
    return ResidualCrossing(weights, combine, output_relu)


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("combine", ["max", "mul"])
def test_float_graph_is_the_numpy_crossing(combine: str) -> None:
    crossing = residual(combine)
    session = ort.InferenceSession(
        crossing_graph(crossing).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    docs, query = unit(300, 1), unit(1, 2)
    got = session.run(None, {"docs": docs, "query": query})[0]
    assert got.shape == (300,)
    np.testing.assert_allclose(got, crossing.logits(query[0], docs), atol=1e-5)


@pytest.mark.parametrize("combine", ["max", "mul"])
def test_int8_graph_ranks_like_the_numpy_crossing(combine: str, tmp_path: Path) -> None:
    crossing = residual(combine)
    path = write_int8_graph(crossing, tmp_path / "onnx" / "crossing.int8.onnx")
    ops = {node.op_type for node in __import__("onnx").load(path).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops  # really quantized
    graph = OnnxCrossing.load(path)
    docs = unit(1000, 3)
    for seed in range(4):
        query = unit(1, 10 + seed)[0]
        want, got = crossing.logits(query, docs), graph.logits(query, docs)
        assert got.dtype == np.float32 and got.shape == (1000,)
        assert np.corrcoef(want, got)[0, 1] > 0.999
        assert len(set(np.argsort(-want)[:10]) & set(np.argsort(-got)[:10])) >= 8
        assert np.abs(want - got).max() > 0  # int8, not the float graph
    assert graph.logits(query, docs[:0]).shape == (0,)
    assert graph.precompute(docs) is None


def test_crossings_without_a_graph_are_refused() -> None:
    for crossing in (
        residual("concat"),
        residual("max", output_relu=True),
        CosineCrossing(10.0, 0.0),
    ):
        assert not supports_int8_graph(crossing)
    with pytest.raises(ModelError, match="max or mul"):
        crossing_graph(residual("concat"))


def _trained_like(checkpoint: Path, folder: Path, crossing: CrossingConfig, int8: bool) -> Path:
    build_tiny_model(checkpoint, folder, crossing=crossing, int8=False)
    model = TwinBert.load(folder).eval()
    with torch.no_grad():  # non-trivial weights
        for p in model.crossing.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    model.save(folder, folder / "tokenizer.json")
    from twinbert_search.training.export import export_model

    report = export_model(folder, int8=int8)
    if int8:
        assert report.crossing_int8 is not None
        assert report.crossing_int8["min_correlation"] > 0.99
        assert any("crossing int8" in line for line in report.lines())
    return folder


def test_export_int8_writes_the_graph_and_int8_runtimes_use_it(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    folder = _trained_like(
        tiny_checkpoint, tmp_path / "m", CrossingConfig("residual", "mul", 8), True
    )
    assert ModelManifest.load(folder).onnx[CROSSING_INT8_KEY] == "onnx/crossing.int8.onnx"
    assert isinstance(TwinBertRuntime.load(folder, int8=True).crossing, OnnxCrossing)
    assert isinstance(TwinBertRuntime.load(folder).crossing, ResidualCrossing)
    exact = TwinBertRuntime.load(folder, int8=True, crossing_int8=False)
    assert isinstance(exact.crossing, ResidualCrossing)
    fast = TwinBertRuntime.load(folder, int8=True)
    q, docs = fast.encode_query("what does the planet orbit"), fast.encode_documents(TEXTS)
    np.testing.assert_allclose(fast.score(q, docs), exact.score(q, docs), atol=2e-2)
    # A float re-export drops the entry, so no runtime loads a graph of older weights.
    from twinbert_search.training.export import export_model

    export_model(folder, int8=False)
    assert CROSSING_INT8_KEY not in ModelManifest.load(folder).onnx
    with pytest.raises(ModelError, match="export with --int8"):
        TwinBertRuntime.load(folder, crossing_int8=True)


def test_models_without_a_crossing_graph(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = build_tiny_model(tiny_checkpoint, tmp_path / "c", crossing=CrossingConfig(), int8=True)
    assert CROSSING_INT8_KEY not in ModelManifest.load(folder).onnx
    assert export_int8_crossing(folder) is None
    assert isinstance(TwinBertRuntime.load(folder, int8=True).crossing, CosineCrossing)
    with pytest.raises(ModelError, match="max or mul"):
        TwinBertRuntime.load(folder, crossing_int8=True)


def test_quantizing_leaves_logging_as_it_was(tmp_path: Path) -> None:
    # onnxruntime's quantizer warns through the root logger, which installs a root handler;
    # afterwards a library's DEBUG records would print. pytest's own handlers hide that, so
    # the check runs in a fresh interpreter.
    code = (
        "import logging, sys\n"
        "from tests.runtime.test_crossing_graph import residual\n"
        "from twinbert_search.quantization.crossing_graph import write_int8_graph\n"
        f"write_int8_graph(residual('max'), {str(tmp_path / 'c.onnx')!r})\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "chatty = logging.getLogger('chatty'); chatty.setLevel(logging.DEBUG)\n"
        "chatty.debug('should not print')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert "should not print" not in done.stderr + done.stdout
