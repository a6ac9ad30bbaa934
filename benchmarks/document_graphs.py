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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from twinbert_search.quantization import (
    KEEP_FLOAT,
    calibration_batches,
    smooth_graph,
    static_int8_graph,
)
from twinbert_search.runtime.encoder import OnnxEncoder, make_session, row_cosines
from twinbert_search.runtime.models import resolve_model
from twinbert_search.runtime.openvino import OpenVinoSession, openvino_available
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


def variants(model: Path, tmp: Path, batches: Batches) -> dict[str, tuple[Callable[[], Any], bool]]:
    """name -> (make a session, sort by length); graphs are built as the table needs them."""
    fp32 = model / "onnx" / "query_encoder.onnx"  # shared towers: the document graph too
    int8 = fp32.with_suffix(".int8.onnx")
    out: dict[str, tuple[Callable[[], Any], bool]] = {
        NAIVE: (lambda: make_session(fp32, THREADS), False),
        "fp32": (lambda: make_session(fp32, THREADS), True),
        "int8 dynamic, per channel (`index --int8`)": (lambda: make_session(int8, THREADS), True),
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
    if not openvino_available():
        logging.warning("openvino is not installed: its rows are left out")
        return out
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    plans = {
        "OpenVINO, fp32 graph (runs bf16)": lambda: fp32,
        "OpenVINO, static int8, every MatMul": lambda: static_int8_graph(
            pre, tmp / "static.onnx", batches, ()
        ),
        "OpenVINO, static int8, outputs and attention in float": lambda: static_int8_graph(
            pre, tmp / "static_in.onnx", batches
        ),
        "OpenVINO, static int8 + SmoothQuant 0.5 (`index --openvino`)": lambda: static_int8_graph(
            smooth_graph(pre, tmp / "smooth.onnx", batches, 0.5, KEEP_FLOAT),
            tmp / "smooth_q.onnx",
            batches,
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
    model = Path(resolve_model(None, build_default=True))
    with open(args.corpus, encoding="utf-8") as f:
        docs = [
            json.loads(line)
            for _, line in zip(range(args.docs + args.calibration), f, strict=False)
        ]
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    texts, calib = texts[: args.docs], texts[args.docs :]
    tok = TextTokenizer.from_file(model / "tokenizer.json", 256)
    names = {"input_ids", "attention_mask", "token_type_ids"}
    batches = calibration_batches(calib, tok, names)
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
        cos = row_cosines(v, ref)
        rate = len(texts) / min(seconds[k])
        print(f"| {k} | {rate:.1f} | {rate / naive:.2f} | {cos.min():.4f} / {cos.mean():.4f} |")


if __name__ == "__main__":
    main()
