"""Would ONNX Runtime's MatMulNBits (blockwise 8- or 4-bit weights, int8 compute) encode
documents faster than the dynamic-int8 graph the indexer uses? (BENCHMARKS.md, indexing.)

Encodes the first 500 SciFact abstracts with the default model's graphs (2 threads, length-
sorted batches of 32), in alternating order over `--rounds`, and prints docs/s and the cosine
of each graph's vectors to the fp32 graph's. Needs the default model built and the dataset:

    python benchmarks/matmul_nbits.py --corpus ../shared/datasets/scifact/corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from twinbert_search.models import resolve_model
from twinbert_search.runtime.encoder import OnnxEncoder, make_session
from twinbert_search.runtime.tokenization import TextTokenizer


def quantize_nbits(src: Path, dst: Path, bits: int) -> Path:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = Path(resolve_model(None))
    fp32 = model / "onnx" / "query_encoder.onnx"  # shared towers: the document graph too
    with open(args.corpus, encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(args.docs), f, strict=False)]
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    tok = TextTokenizer.from_file(model / "tokenizer.json", 256)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"fp32": fp32, "int8 (dynamic, the indexer's)": fp32.with_suffix(".int8.onnx")}
        for bits in (8, 4):
            graphs[f"MatMulNBits {bits}-bit"] = quantize_nbits(
                fp32, Path(tmp) / f"nbits{bits}.onnx", bits
            )
        encoders = {k: OnnxEncoder(make_session(v, 2), tok) for k, v in graphs.items()}
        ref = encoders["fp32"].encode(texts)
        seconds: dict[str, list[float]] = {k: [] for k in encoders}
        vectors = {}
        for r in range(args.rounds):
            for k in list(encoders)[:: 1 if r % 2 == 0 else -1]:
                t0 = time.perf_counter()
                vectors[k] = encoders[k].encode(texts)
                seconds[k].append(time.perf_counter() - t0)
    for k, v in vectors.items():
        cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
        rates = ", ".join(f"{len(texts) / s:.1f}" for s in seconds[k])
        print(
            f"{k}: {len(texts) / min(seconds[k]):.1f} docs/s best ({rates}); "
            f"cosine to fp32 min {cos.min():.4f} mean {cos.mean():.4f}"
        )


if __name__ == "__main__":
    main()
