"""The static int8 document graph (`quantize`) and the OpenVINO indexing path (`--openvino`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from tests.conftest import WORDS, build_tiny_model
from twinbert_search.cli import main
from twinbert_search.errors import ConfigurationError, ModelError
from twinbert_search.manifest import STATIC_INT8_KEY, ModelManifest
from twinbert_search.quantization import (
    KEEP_FLOAT,
    calibration_batches,
    quantize_documents,
    smooth_graph,
)
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.runtime.encoder import OnnxEncoder, make_session
from twinbert_search.runtime.model import document_graph_of
from twinbert_search.runtime.openvino import openvino_available
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.stores.embedded import EmbeddedStore

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) for _ in range(n)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model of this module's own: quantizing writes into its directory."""
    folder = build_tiny_model(tiny_checkpoint, tmp_path_factory.mktemp("quantized"))
    quantize_documents(folder, texts(48))
    return folder


def test_smoothing_leaves_the_graph_function_unchanged(model: Path, tmp_path: Path) -> None:
    manifest = ModelManifest.load(model)
    src = model / manifest.onnx["document_encoder"]
    tok = TextTokenizer.from_file(model / "tokenizer.json", manifest.max_doc_length)
    session = make_session(src)
    batches = calibration_batches(texts(16), tok, {i.name for i in session.get_inputs()})
    smoothed = smooth_graph(src, tmp_path / "s.onnx", batches, alpha=0.5)
    muls = [n.name for n in onnx.load(str(smoothed)).graph.node if n.name.endswith("/Smooth")]
    # two layers: Q, K, V, attention output, FFN in, FFN out (and the pooling's score layer)
    assert len([m for m in muls if "/encoder/layer." in m]) == 2 * 6
    check = texts(20, seed=1)
    want = OnnxEncoder(session, tok).encode(check)
    got = OnnxEncoder(make_session(smoothed), tok).encode(check)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_quantize_records_the_graph_and_its_fidelity(model: Path) -> None:
    manifest = ModelManifest.load(model)
    path = model / manifest.onnx[STATIC_INT8_KEY]
    graph = onnx.load(str(path))
    quantized = {
        n.name
        for n in graph.graph.node
        if n.op_type == "MatMul" and any(i.endswith("_DequantizeLinear_Output") for i in n.input)
    }
    kept = [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name not in quantized]
    assert quantized and kept
    assert all(any(k in name for k in KEEP_FLOAT) for name in kept)
    assert not any(any(k in name for k in KEEP_FLOAT) for name in quantized)
    extra = manifest.extra["static_int8"]
    assert extra["calibration_docs"] == 48 and extra["alpha"] == 0.5
    assert 0.9 < extra["min_cosine"] <= extra["mean_cosine"] <= 1.0 + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"texts": []}, "no calibration documents"), ({"alpha": 1.5}, "alpha")],
)
def test_quantize_rejects_bad_settings(model: Path, kwargs: dict, message: str) -> None:
    args = {"texts": texts(4), "overwrite": True, **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        quantize_documents(model, args.pop("texts"), **args)


def test_openvino_graph_missing_names_the_command(tiny_model: Path) -> None:
    with pytest.raises(ModelError, match="twinbert-search quantize"):
        TwinBertRuntime.load(tiny_model, document_graph="openvino-int8")


def test_document_graph_round_trips_through_the_fingerprint(tiny_model: Path) -> None:
    for graph in ("fp32", "int8"):
        runtime = TwinBertRuntime.load(tiny_model, document_graph=graph)
        assert document_graph_of(runtime.fingerprint) == graph
    assert document_graph_of("abc:openvino-int8") == "openvino-int8"
    assert document_graph_of(None) == "fp32"


@needs_openvino
def test_openvino_runtime_encodes_close_to_fp32(model: Path) -> None:
    fp32 = TwinBertRuntime.load(model)
    ov = TwinBertRuntime.load(model, document_graph="openvino-int8", threads=1)
    assert ov.fingerprint == fp32.fingerprint + ":openvino-int8"
    check = texts(40, seed=2)
    first = ov.encode_documents(check, batch_size=8)
    assert first.shape == (40, fp32.dim) and first.dtype == np.float32
    assert cosines(first, fp32.encode_documents(check)).min() > 0.9
    # Batches must not share an output buffer: a second call leaves the first's rows alone.
    again = ov.encode_documents(check[::-1], batch_size=8)[::-1]
    np.testing.assert_allclose(again, first, atol=1e-3)


@needs_openvino
def test_cli_quantize_then_index_openvino_then_search(model: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"d{i}", "title": "star", "text": t} for i, t in enumerate(texts(30))]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    quantize = ["quantize", str(corpus), "--model", str(model), "--docs", "20"]
    done = runner.invoke(main, quantize)  # the fixture's graph is there: kept unless --force
    assert done.exit_code == 2 and "--force" in done.stderr
    assert ModelManifest.load(model).extra["static_int8"]["calibration_docs"] == 48
    done = runner.invoke(main, [*quantize, "--force"])
    assert done.exit_code == 0, done.output
    assert "calibrated on 20 documents" in done.output
    assert ModelManifest.load(model).extra["static_int8"]["calibration_docs"] == 20
    ix = tmp_path / "ix"
    base = ["index", str(corpus), "--index-dir", str(ix), "--model", str(model), "--no-progress"]
    done = runner.invoke(main, [*base, "--openvino"])
    assert done.exit_code == 0, done.output
    with EmbeddedStore.open(ix, read_only=True) as store:
        assert store.info.model_fingerprint.endswith(":openvino-int8")
        assert len(store.all_ids()) == 30
    # The store's vectors came from the OpenVINO graph: plain fp32 must not add to them ...
    done = runner.invoke(main, base)
    assert done.exit_code == 4 and "built with model" in done.stderr
    # ... while search follows the store (its query side is the usual graph).
    done = runner.invoke(
        main, ["search", "star moon", "--index-dir", str(ix), "--model", str(model), "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["hits"]


def test_index_openvino_refuses_encode_in_cluster(tiny_model: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "the moon"}) + "\n")
    done = CliRunner().invoke(
        main,
        ["index", str(corpus), "--backend", "opensearch", "--model", str(tiny_model),
         "--url", "http://localhost:9", "--openvino", "--encode-in-cluster", "--model-id", "m1"],
    )  # fmt: skip
    assert done.exit_code != 0
    assert "--openvino" in done.stderr


def test_reexport_drops_the_stale_static_graph(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from twinbert_search.training.export import export_model

    folder = build_tiny_model(tiny_checkpoint, tmp_path / "m")
    quantize_documents(folder, texts(8))
    export_model(folder)  # new fp32 graphs: the calibrated one no longer matches them
    manifest = ModelManifest.load(folder)
    assert STATIC_INT8_KEY not in manifest.onnx and "static_int8" not in manifest.extra
    with pytest.raises(ModelError, match="twinbert-search quantize"):
        TwinBertRuntime.load(folder, document_graph="openvino-int8")


def test_quantize_calibrates_on_documents_as_the_runtime_feeds_them(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model with a document prefix (an imported e5's "passage: ") is calibrated and checked
    on prefixed text, as `index` encodes it."""
    import twinbert_search.quantization.document_graph as document_graph

    folder = build_tiny_model(tiny_checkpoint, tmp_path / "prefixed")
    manifest = ModelManifest.load(folder)
    manifest.document_prefix = "passage: "
    manifest.save(folder)
    seen: list[str] = []
    real_encode = TextTokenizer.encode

    def spy(self: TextTokenizer, batch: list[str]) -> object:
        seen.extend(batch)
        return real_encode(self, batch)

    monkeypatch.setattr(TextTokenizer, "encode", spy)
    calibration = texts(8)
    document_graph.quantize_documents(folder, calibration)
    assert seen and all(t.startswith("passage: ") for t in seen)
    assert {"passage: " + t for t in calibration} <= set(seen)
