"""Which document graph, on which CPU runtime, encodes documents fastest at fp32's quality?
(BENCHMARKS.md, indexing: the 2.5x target.)

Encodes the first `--docs` SciFact abstracts with each variant of the default model's
document graph (2 threads, length-sorted batches of 32, the naive baseline in input order),
in alternating order over `--rounds`, and prints a markdown table: docs/s (best round), the
ratio to the naive baseline of the same run, and the cosine of each variant's vectors to the
fp32 graph's. Static int8 variants are calibrated on the `--calibration` documents after the
timed ones. Needs the default model built and the dataset:

    python benchmarks/document_graphs.py --corpus ../shared/datasets/scifact/corpus.jsonl

The OpenVINO rows need `pip install openvino` (not a dependency of twinbert-search: the
indexer runs ONNX Runtime); without it they are left out.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from twinbert_search.models import resolve_model
from twinbert_search.runtime.encoder import OnnxEncoder, make_session
from twinbert_search.runtime.tokenization import TextTokenizer

THREADS = 2
NAIVE = "fp32, input order (naive baseline)"
Batches = list[dict[str, np.ndarray]]


def fused_int8(src: Path, dst: Path, config: Path) -> Path:
    """ORT's BERT fusions (Attention, SkipLayerNorm, BiasGelu), then dynamic int8."""
    from onnxruntime.transformers import optimizer

    bert = json.loads(config.read_text())
    fused = dst.with_suffix(".fused.onnx")
    optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=bert["num_attention_heads"],
        hidden_size=bert["hidden_size"],
        opt_level=0,
    ).save_model_to_file(str(fused))
    quantize_dynamic(
        str(fused),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return dst


def matmul_nbits(src: Path, dst: Path, bits: int) -> Path:
    """Weight-only block quantization (block 32) with int8 compute (accuracy level 4)."""
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=True, accuracy_level=4, bits=bits
    )
    q = nbits.MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=bits,
        block_size=32,
        is_symmetric=True,
        accuracy_level=4,
        algo_config=config,
    )
    q.process()
    q.model.save_model_to_file(str(dst), False)
    return dst


class _Reader(CalibrationDataReader):
    def __init__(self, batches: Batches) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _weighted_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    weights = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def smooth(src: Path, dst: Path, batches: Batches, alpha: float, skip: tuple[str, ...]) -> Path:
    """SmoothQuant: move activation outliers into the weights, channel by channel.

    For each weighted MatMul x @ W (except names containing `skip`), s_j = max|x_j|^alpha /
    max|W_j|^(1 - alpha) over the calibration batches; x / s goes through a new Mul and
    W becomes diag(s) W, so the product is unchanged and x is easier to quantize per tensor.
    The Mul cannot fold into the LayerNorm before it: that output also feeds the residual.
    """
    model = onnx.load(str(src))
    targets = [n for n in _weighted_matmuls(model) if not any(s in n.name for s in skip)]
    probe = onnx.load(str(src))
    for n in targets:
        probe.graph.output.append(helper.make_tensor_value_info(n.input[0], 1, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n.input[0] for n in targets]
    amax: dict[str, np.ndarray] = {}
    for batch in batches:
        for name, out in zip(names, session.run(names, batch), strict=True):
            a = np.abs(out).reshape(-1, out.shape[-1]).max(0)
            amax[name] = np.maximum(amax[name], a) if name in amax else a
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        if n in targets:
            w = numpy_helper.to_array(inits[n.input[1]])
            s = np.maximum(amax[n.input[0]], 1e-5) ** alpha
            s = (s / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - alpha)).astype(np.float32)
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], n.input[1]))
            model.graph.initializer.append(numpy_helper.from_array(1 / s, n.name + "_smooth"))
            out = n.name + "_smoothed"
            nodes.append(helper.make_node("Mul", [n.input[0], n.name + "_smooth"], [out]))
            n.input[0] = out
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return dst


def static_int8(src: Path, dst: Path, batches: Batches, keep_float: tuple[str, ...]) -> Path:
    """Static QDQ int8 (symmetric, per-channel weights, MinMax ranges on the calibration
    batches) of every MatMul whose name contains none of `keep_float`."""
    model = onnx.load(str(src))
    keep = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and any(k in n.name for k in keep_float)
    ]
    quantize_static(
        str(src),
        str(dst),
        _Reader(batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=keep,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return dst


class OpenVinoSession:
    """The slice of `ort.InferenceSession` that `OnnxEncoder` uses, over OpenVINO's CPU
    plugin (its default precision: bf16 on CPUs with AVX512_BF16, as here)."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        self._model = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
        self._request = self._model.create_infer_request()
        self._output = self._model.outputs[0]

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=i.get_any_name()) for i in self._model.inputs]

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(shape=[None, self._output.get_partial_shape()[-1].get_length()])]

    def run(self, _names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self._request.infer(feed)[self._output]]


def variants(model: Path, tmp: Path, batches: Batches) -> dict[str, tuple[Callable[[], Any], bool]]:
    """name -> (make a session, sort by length); graphs are built as the table needs them."""
    fp32 = model / "onnx" / "query_encoder.onnx"  # shared towers: the document graph too
    int8 = fp32.with_suffix(".int8.onnx")
    out: dict[str, tuple[Callable[[], Any], bool]] = {
        NAIVE: (lambda: make_session(fp32, THREADS), False),
        "fp32": (lambda: make_session(fp32, THREADS), True),
        "int8 dynamic, per channel (the indexer's)": (lambda: make_session(int8, THREADS), True),
        "int8 dynamic, fused attention": (
            lambda: make_session(
                fused_int8(fp32, tmp / "fused.onnx", model / "query_encoder" / "config.json"),
                THREADS,
            ),
            True,
        ),
    }
    for bits in (8, 4):
        out[f"MatMulNBits {bits}-bit, block 32"] = (
            lambda b=bits: make_session(matmul_nbits(fp32, tmp / f"nbits{b}.onnx", b), THREADS),
            True,
        )
    try:
        import openvino  # noqa: F401
    except ImportError:
        logging.warning("openvino is not installed: its rows are left out")
        return out
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    outputs = ("output/dense", "self/MatMul")  # output projections and the attention products
    plans = {
        "OpenVINO, fp32 graph (runs bf16)": lambda: fp32,
        "OpenVINO, static int8, every MatMul": lambda: static_int8(
            pre, tmp / "static.onnx", batches, ()
        ),
        "OpenVINO, static int8, outputs and attention in float": lambda: static_int8(
            pre, tmp / "static_in.onnx", batches, outputs
        ),
        "OpenVINO, static int8 + SmoothQuant 0.5, outputs and attention in float": lambda: (
            static_int8(
                smooth(pre, tmp / "smooth.onnx", batches, 0.5, outputs),
                tmp / "smooth_q.onnx",
                batches,
                outputs,
            )
        ),
    }
    for name, graph in plans.items():
        out[name] = (lambda g=graph: OpenVinoSession(g(), THREADS), True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    model = Path(resolve_model(None))
    with open(args.corpus, encoding="utf-8") as f:
        docs = [
            json.loads(line)
            for _, line in zip(range(args.docs + args.calibration), f, strict=False)
        ]
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    texts, calib = texts[: args.docs], texts[args.docs :]
    tok = TextTokenizer.from_file(model / "tokenizer.json", 256)
    encoded = tok.encode(calib)
    batches = [tok.pad(encoded[i : i + 16]) for i in range(0, len(encoded), 16)]
    with tempfile.TemporaryDirectory() as tmp:
        plans = variants(model, Path(tmp), batches)
        encoders = {k: (OnnxEncoder(make(), tok), s) for k, (make, s) in plans.items()}
    seconds: dict[str, list[float]] = {k: [] for k in encoders}
    vectors = {}
    for r in range(args.rounds):
        for k in list(encoders)[:: 1 if r % 2 == 0 else -1]:
            encoder, by_length = encoders[k]
            t0 = time.perf_counter()
            vectors[k] = encoder.encode(texts, sort_by_length=by_length)
            seconds[k].append(time.perf_counter() - t0)
    ref = vectors["fp32"]
    naive = len(texts) / min(seconds[NAIVE])
    print(f"{len(texts)} documents, {THREADS} threads, best of {args.rounds} rounds\n")
    print("| document graph | docs/s | x naive | cosine to fp32 (min / mean) |")
    print("|---|---:|---:|---:|")
    for k, v in vectors.items():
        cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
        rate = len(texts) / min(seconds[k])
        print(f"| {k} | {rate:.1f} | {rate / naive:.2f} | {cos.min():.4f} / {cos.mean():.4f} |")


if __name__ == "__main__":
    main()
