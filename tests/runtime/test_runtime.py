"""The serving runtime: ONNX parity with PyTorch, numpy crossing parity, no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import build_tiny_model
from twinbert_search.errors import ModelError
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.modeling import TwinBert
from twinbert_search.training.tokenizer import to_torch

MIXED = [
    "star",
    "what does the planet orbit",
    "the heart and the blood cell of a virus and a vaccine for the doctor " * 4,
    "bread",
    "a volcano by the ocean with a river and a wave",
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_matches_pytorch_on_mixed_lengths(tiny_model: Path) -> None:
    runtime = TwinBertRuntime.load(tiny_model)
    model = TwinBert.load(tiny_model).eval()
    tok = TextTokenizer.from_file(tiny_model / "tokenizer.json", runtime.manifest.max_doc_length)
    with torch.no_grad():
        expected = model.encode_documents(to_torch(tok(MIXED))).numpy()
    got = runtime.encode_documents(MIXED, batch_size=2)  # length-sorted, re-ordered batches
    assert np.abs(got - expected).max() <= 1e-4


def test_int8_graph_stays_close(tiny_model: Path) -> None:
    fp32 = TwinBertRuntime.load(tiny_model).encode_documents(MIXED)
    runtime8 = TwinBertRuntime.load(tiny_model, int8=True)
    assert runtime8.fingerprint.endswith(":int8")
    assert _cos(runtime8.encode_documents(MIXED), fp32).min() >= 0.99


def test_an_int8_query_graph_encodes_each_query_as_search_does(tiny_model: Path) -> None:
    """Dynamic int8 scales activations per run: batched, a query's vector would depend on its
    batch-mates. Queries encode one per run, so a batch equals the served, one-query vectors."""
    runtime8 = TwinBertRuntime.load(tiny_model, int8=True)
    alone = np.stack([runtime8.encode_query(text) for text in MIXED])
    np.testing.assert_array_equal(runtime8.encode_queries(MIXED), alone)
    np.testing.assert_array_equal(runtime8.encode_queries(MIXED[::-1])[::-1], alone)
    # Batched, the same graph gives other vectors: what this guards against.
    encoder = runtime8.query_encoder
    batched = type(encoder)(encoder.session, encoder.tokenizer).encode(MIXED)
    assert np.abs(batched - alone).max() > 1e-4


def test_batch_order_does_not_change_vectors(tiny_model: Path) -> None:
    runtime = TwinBertRuntime.load(tiny_model)
    sorted_ = runtime.encode_documents(MIXED, batch_size=2, sort_by_length=True)
    unsorted = runtime.encode_documents(MIXED, batch_size=2, sort_by_length=False)
    np.testing.assert_allclose(sorted_, unsorted, atol=1e-5)
    assert runtime.encode_documents([]).shape == (0, runtime.dim)


@pytest.mark.parametrize(
    "crossing",
    [
        CrossingConfig("cosine"),
        CrossingConfig("residual", "max", 8),
        CrossingConfig("residual", "concat", 8),
        CrossingConfig("residual", "mul", 8),
        CrossingConfig("residual", "max", 8, output_relu=True),
        CrossingConfig("residual", "concat", 8, output_relu=True),
        CrossingConfig("residual", "mul", 8, output_relu=True),
    ],
    ids=[
        "cosine",
        "res-max",
        "res-concat",
        "res-mul",
        "res-max-relu",
        "res-concat-relu",
        "res-mul-relu",
    ],
)
def test_numpy_crossing_matches_torch(tiny_checkpoint: Path, tmp_path: Path, crossing) -> None:
    folder = build_tiny_model(tiny_checkpoint, tmp_path / "m", crossing=crossing)
    model = TwinBert.load(folder).eval()
    with torch.no_grad():  # non-trivial weights, logits in a range the logistic resolves
        for p in model.crossing.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    model.save(folder, folder / "tokenizer.json")
    runtime = TwinBertRuntime.load(folder)
    q = runtime.encode_query("what does the planet orbit")
    docs = runtime.encode_documents(MIXED)
    with torch.no_grad():
        expected = torch.sigmoid(
            model.crossing(torch.from_numpy(q).expand(len(docs), -1), torch.from_numpy(docs))
        ).numpy()
    got = runtime.score(q, docs)
    assert got.shape == (len(MIXED),)
    assert ((got > 0) & (got < 1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    pre = runtime.precompute_documents(docs)
    if crossing.combine == "concat" and crossing.type == "residual":
        assert pre is not None and pre.shape == (len(MIXED), 8)
        np.testing.assert_allclose(runtime.score(q, docs, pre), expected, atol=1e-5)
    else:
        assert pre is None


def test_runtime_does_not_import_torch(tiny_model: Path) -> None:
    code = (
        "import sys\n"
        "from twinbert_search.runtime import TwinBertRuntime\n"
        f"r = TwinBertRuntime.load({str(tiny_model)!r})\n"
        "r.score(r.encode_query('star'), r.encode_documents(['the moon']))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_graph_is_a_clear_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = build_tiny_model(tiny_checkpoint, tmp_path / "m")  # no --int8
    with pytest.raises(ModelError, match="int8"):
        TwinBertRuntime.load(folder, int8=True)
    with pytest.raises(ModelError, match="not found"):
        TwinBertRuntime.load(tmp_path / "missing")


def test_export_traces_eager_attention_and_restores_the_setting(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SDPA traces into extra shape arithmetic per layer; the graphs carry eager attention."""
    from contextlib import nullcontext

    import onnx

    from twinbert_search.training import export

    model = TwinBert.load(tiny_model)
    backbone = model.query_tower.backbone
    before = backbone.config._attn_implementation
    assert before != "eager"
    with export.eager_attention(model):
        assert backbone.config._attn_implementation == "eager"
    assert backbone.config._attn_implementation == before

    def shape_ops(path: Path) -> int:
        return [node.op_type for node in onnx.load(str(path)).graph.node].count("Shape")

    tok = TextTokenizer.from_file(tiny_model / "tokenizer.json", 16)
    monkeypatch.setattr(export, "eager_attention", lambda module: nullcontext())
    export._export_tower(model.query_tower, tmp_path / "sdpa.onnx", to_torch(tok(MIXED[:2])), 17)
    assert shape_ops(tiny_model / "onnx" / "query_encoder.onnx") < shape_ops(tmp_path / "sdpa.onnx")


def test_sessions_can_stop_spin_waiting(tiny_model: Path) -> None:
    """Timed back to back, a spinning session would hold the cores the next one needs."""
    from twinbert_search.runtime.encoder import make_session

    graph = tiny_model / "onnx" / "query_encoder.onnx"
    quiet = make_session(graph, 2, spinning=False).get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = make_session(graph, 2).get_session_options()
    with pytest.raises(Exception, match="allow_spinning"):  # unset: ORT's default, spinning
        default.get_session_config_entry("session.intra_op.allow_spinning")


def test_runtime_sessions_spin_unless_told_not_to(tiny_model: Path) -> None:
    # Spinning speeds a multi-threaded encode; spinning=False frees the cores for numpy.
    def spins(runtime: TwinBertRuntime) -> bool:
        options = runtime.query_encoder.session.get_session_options()
        try:
            return options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
        except Exception:  # unset: ORT's default, spinning
            return True

    assert spins(TwinBertRuntime.load(tiny_model, threads=2))  # ONNX Runtime's default
    assert not spins(TwinBertRuntime.load(tiny_model, threads=2, spinning=False))


def test_probabilities_keep_the_order_of_large_logits() -> None:
    from twinbert_search.runtime.crossing import sigmoid

    logits = np.array([-800.0, -40.0, -20.0, 0.0, 18.0, 25.0, 30.0], np.float32)
    with np.errstate(all="raise"):  # no overflow on the way
        probs = sigmoid(logits)
    assert ((probs >= 0.0) & (probs <= 1.0)).all()
    assert (np.diff(probs[1:]) > 0).all()  # float32 would make 18, 25 and 30 all 1.0
