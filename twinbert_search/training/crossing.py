"""Crossing layers (PyTorch): score a (query, document) vector pair.

TwinBERT (Lu, Jiao, Zhang 2020) uses cosine for recall and a residual network for relevance.
Both return logits; the probability is their logistic. `twinbert_search.runtime.crossing`
is the numpy twin used for serving.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from twinbert_search.manifest import CrossingConfig


class CosineCrossing(nn.Module):
    """logit = scale * cos(q, d) + bias, with scale and bias learned."""

    def __init__(self, scale: float = 10.0, bias: float = -5.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """query (B, D), docs (B, D) -> logits (B,)."""
        return self.scale * F.cosine_similarity(query, docs, dim=-1) + self.bias


class ResidualCrossing(nn.Module):
    """x = max(q, d), [q; d] or q * d; z = dense2(relu(dense1(x))) + x; logit = out(z).

    That is the paper's block (dense, ReLU, dense, add back, logistic) with its max or concat
    combination, plus `mul` (element-wise product). `mul` starts as the cosine crossing: its
    output weights begin equal (out . x = scale * q . d, the cosine for unit vectors) and dense2
    at zero, so the block first scores like the bi-encoder and learns corrections on top. Max
    and concat start from random scores that cannot express q . d linearly.
    `output_relu` puts a ReLU on z, as models trained before 0.1.0 had; without it serving
    folds dense2 into `out`.
    """

    def __init__(
        self, dim: int, hidden: int = 256, combine: str = "max", output_relu: bool = False
    ) -> None:
        super().__init__()
        if combine not in ("max", "concat", "mul"):
            raise ValueError(f"combine must be 'max', 'concat' or 'mul', got {combine!r}")
        self.combine = combine
        self.output_relu = output_relu
        width = 2 * dim if combine == "concat" else dim
        self.dense1 = nn.Linear(width, hidden)
        self.dense2 = nn.Linear(hidden, width)
        self.out = nn.Linear(width, 1)
        if combine == "mul":
            scale, bias = CosineCrossing().scale.item(), CosineCrossing().bias.item()
            with torch.no_grad():
                nn.init.zeros_(self.dense2.weight)
                nn.init.zeros_(self.dense2.bias)
                self.out.weight.fill_(scale)
                self.out.bias.fill_(bias)

    def forward(self, query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        if query.shape != docs.shape:
            raise ValueError(f"query {tuple(query.shape)} and docs {tuple(docs.shape)} differ")
        if self.combine == "max":
            x = torch.maximum(query, docs)
        elif self.combine == "mul":
            x = query * docs
        else:
            x = torch.cat([query, docs], -1)
        z = self.dense2(F.relu(self.dense1(x))) + x
        if self.output_relu:
            z = F.relu(z)
        return self.out(z).squeeze(-1)


def fold_affine(module: nn.Module, a: float, b: float) -> None:
    """Make the crossing return a * logit + b (a calibration; `a` > 0 keeps its ranking)."""
    if a <= 0:
        raise ValueError(f"the scale must be positive, got {a}")
    with torch.no_grad():
        if isinstance(module, CosineCrossing):
            module.bias.mul_(a).add_(b)
            module.scale.mul_(a)
        else:
            module.out.bias.mul_(a).add_(b)
            module.out.weight.mul_(a)


def build_crossing(config: CrossingConfig, dim: int) -> nn.Module:
    """A fresh crossing layer for `dim`-wide vectors, as the config describes it."""
    config.validate()
    if config.type == "cosine":
        return CosineCrossing()
    return ResidualCrossing(dim, config.hidden, config.combine, config.output_relu)


def save_crossing(module: nn.Module, folder: Path) -> None:
    """Write the crossing's weights to folder/model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def load_crossing_weights(module: nn.Module, folder: Path) -> None:
    """Load weights written by `save_crossing` into a crossing of the same config."""
    module.load_state_dict(load_file(str(folder / "model.safetensors")))
