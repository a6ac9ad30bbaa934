"""Export a trained TwinBERT to ONNX (fp32 and optionally int8) and check parity.

Pooling, projection and normalisation are inside the graphs, so the runtime only tokenizes,
runs the graph and applies the numpy crossing layer. Parity against PyTorch is measured on
a batch of mixed lengths and returned, so the CLI can print it and tests can assert it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from twinbert_search.errors import ModelError
from twinbert_search.manifest import ModelManifest
from twinbert_search.quantization.crossing_graph import export_int8_crossing
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.modeling import Tower, TwinBert
from twinbert_search.training.tokenizer import to_torch

__all__ = ["ExportReport", "eager_attention", "export_model", "quantize_int8"]

log = logging.getLogger(__name__)
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
PARITY_TEXTS = [
    "a",
    "what causes the northern lights",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn. " * 6,
    "Protein folding determines function; misfolding is linked to disease.",
]


@dataclass
class ExportReport:
    """Parity of the exported graphs against PyTorch on the same inputs."""

    fp32_max_abs_diff: dict[str, float]
    int8_min_cosine: dict[str, float] | None = None
    crossing_int8: dict[str, float] | None = None  # `crossing_graph.parity`, when written

    def lines(self) -> list[str]:
        out = [f"{k} fp32 max |diff| = {v:.2e}" for k, v in self.fp32_max_abs_diff.items()]
        for k, v in (self.int8_min_cosine or {}).items():
            out.append(f"{k} int8 min cosine = {v:.4f}")
        if self.crossing_int8:
            out.append(
                "crossing int8 vs float on 1,000 candidates: min correlation "
                f"{self.crossing_int8['min_correlation']:.4f}, min top-10 overlap "
                f"{self.crossing_int8['min_top10_overlap']:.1f}"
            )
        return out


class _TowerGraph(nn.Module):
    def __init__(self, tower: Tower) -> None:
        super().__init__()
        self.tower = tower

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        return self.tower(input_ids, attention_mask, token_type_ids)


@contextmanager
def eager_attention(module: nn.Module) -> Iterator[None]:
    """Export attention as plain MatMul/Softmax rather than SDPA, then restore the setting.

    Traced SDPA adds shape-computation ops to every layer; with eager attention ONNX Runtime
    runs the same model faster on CPU, most of all the int8 graph at document lengths (see
    BENCHMARKS.md, indexing), and the outputs are equal within float error.
    """
    changed = []
    for sub in module.modules():
        config = getattr(sub, "config", None)
        setter = getattr(sub, "set_attn_implementation", None)
        current = getattr(config, "_attn_implementation", None)
        if setter is not None and current not in (None, "eager"):
            setter("eager")
            changed.append((setter, current))
    try:
        yield
    finally:
        for setter, previous in reversed(changed):
            setter(previous)


def _export_tower(tower: Tower, path: Path, sample: dict[str, torch.Tensor], opset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes["embedding"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings(), eager_attention(tower):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TowerGraph(tower).eval(),
            tuple(sample[name] for name in INPUTS),
            str(path),
            input_names=INPUTS,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(src: str | Path, dst: str | Path) -> None:
    """Write `dst`: the ONNX graph `src` with dynamic int8 weights (per-channel), activations
    quantized at run time. Used for the towers here and for the recipe's teacher graph.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from twinbert_search.quantization import quiet_quantizer

    # Per-channel weights: per-tensor scales lose too much of the towers' cosine to their
    # fp32 vectors (BENCHMARKS.md).
    with quiet_quantizer():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def export_model(model_dir: str | Path, *, int8: bool = False, opset: int = 17) -> ExportReport:
    """Write onnx/ graphs into a saved model directory and record them in its manifest."""
    from twinbert_search.runtime.encoder import OnnxEncoder, make_session, row_cosines

    model_dir = Path(model_dir)
    model = TwinBert.load(model_dir).eval()
    manifest: ModelManifest = model.manifest
    towers = {"query_encoder": (model.query_tower, manifest.max_query_length)}
    if not manifest.shared_towers:
        towers["document_encoder"] = (model.doc_tower, manifest.max_doc_length)
    report = ExportReport(fp32_max_abs_diff={}, int8_min_cosine={} if int8 else None)
    onnx_paths: dict[str, str] = {}
    for role, (tower, max_len) in towers.items():
        tok = TextTokenizer.from_file(model_dir / "tokenizer.json", max_len)
        batch = tok(PARITY_TEXTS)
        rel = f"onnx/{role}.onnx"
        _export_tower(tower, model_dir / rel, to_torch(tok(PARITY_TEXTS[:2])), opset)
        onnx_paths[role] = rel
        with torch.no_grad():
            expected = tower(**to_torch(batch)).numpy()
        got = OnnxEncoder(make_session(model_dir / rel), tok).encode(PARITY_TEXTS)
        report.fp32_max_abs_diff[role] = float(np.abs(got - expected).max())
        if int8:
            rel8 = f"onnx/{role}.int8.onnx"
            quantize_int8(model_dir / rel, model_dir / rel8)
            onnx_paths[f"{role}_int8"] = rel8
            got8 = OnnxEncoder(make_session(model_dir / rel8), tok).encode(PARITY_TEXTS)
            report.int8_min_cosine[role] = float(row_cosines(got8, expected).min())
    if manifest.shared_towers:
        onnx_paths["document_encoder"] = onnx_paths["query_encoder"]
        if int8:
            onnx_paths["document_encoder_int8"] = onnx_paths["query_encoder_int8"]
    manifest.onnx = onnx_paths  # a static int8 graph (`quantize`) is stale now: dropped
    manifest.extra.pop("static_int8", None)
    manifest.save(model_dir)
    if int8:
        report.crossing_int8 = export_int8_crossing(model_dir)
    worst = max(report.fp32_max_abs_diff.values())
    if worst > 1e-3:
        raise ModelError(f"ONNX export diverges from PyTorch (max |diff| {worst:.2e})")
    return report
