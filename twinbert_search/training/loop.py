"""What the teacher and student loops do alike: take a step, resume, save the state.

Both loops step AdamW under a linear schedule with clipped gradients, and save the same
training state, so a resumed run ends with the weights of an uninterrupted one; written
once here so a fix to either lands in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from twinbert_search.training.data import Checkpointing, save_checkpoint

__all__ = ["due", "restore_state", "save_state", "take_step"]


def due(step: int, every: int, steps: int) -> bool:
    """Whether a periodic action runs after `step`: every `every` steps and at the end."""
    return step % every == 0 or step == steps


def take_step(model: nn.Module, optimizer: Any, scheduler: Any, loss: torch.Tensor) -> None:
    """Backpropagate `loss`, clip the gradients to norm 1, step the optimizer and schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()


def restore_state(
    state: Mapping[str, Any], model: nn.Module, optimizer: Any, scheduler: Any
) -> None:
    """Load a saved state's weights, optimizer, schedule and torch generator (dropout)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])


def save_state(
    checkpoint: Checkpointing,
    step: int,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    **more: Any,
) -> None:
    """Save what `restore_state` loads, with the run's config and the loop's own `more`."""
    save_checkpoint(
        checkpoint.folder,
        {
            "step": step,
            "config": dict(checkpoint.config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **more,
        },
    )
