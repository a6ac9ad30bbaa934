"""The cross-encoder teacher's model: BERT over a (query, document) pair -> one logit.

TwinBERT (Lu, Jiao, Zhang 2020) distils a full-interaction BERT, which reads query and
document together, into the twin encoders. This teacher is a BERT backbone over
`[CLS] query [SEP] document [SEP]` with a pooling ([CLS] or mean) and a linear head. It saves
and loads its own directory:

    teacher.json        format version, pooling, max_length, base model, fingerprint, validation
    tokenizer.json      the tokenizer the teacher was trained with
    backbone/           HF checkpoint (config.json, model.safetensors)
    head.safetensors    pooling + linear head
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from twinbert_search import __version__
from twinbert_search.errors import ConfigurationError, ModelError
from twinbert_search.training.args import TEACHER_POOLINGS
from twinbert_search.training.modeling import Pooling, bert_inputs, load_backbone

__all__ = [
    "BACKBONE_DIR",
    "HEAD_FILE",
    "TEACHER_FILE",
    "TEACHER_FORMAT",
    "TEACHER_POOLINGS",
    "CrossEncoder",
    "fingerprint",
]

TEACHER_FILE = "teacher.json"
TEACHER_FORMAT = 1
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"


def fingerprint(module: nn.Module, identity: Mapping[str, Any]) -> str:
    """sha256 over the identity and every weight: equal fingerprints score alike."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu()
        t = t.to(torch.float32) if t.is_floating_point() else t
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


class CrossEncoder(nn.Module):
    """BERT over a (query, document) pair -> pooling -> dropout -> linear -> one logit."""

    def __init__(self, backbone: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in TEACHER_POOLINGS:
            raise ConfigurationError(
                f"teacher pooling must be one of {TEACHER_POOLINGS}, got {pooling!r}"
            )
        config = backbone.config
        self.backbone = backbone
        self.pooling = Pooling(config.hidden_size, pooling)
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.head = nn.Linear(config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.head.bias)

    @property
    def pooling_mode(self) -> str:
        return self.pooling.mode

    @classmethod
    def from_checkpoint(cls, path: str | Path, pooling: str = "cls") -> CrossEncoder:
        """A fresh head on a local BERT-family checkpoint (raises ModelError otherwise)."""
        return cls(load_backbone(path).float(), pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pair batch -> logits (batch,)."""
        inputs = bert_inputs(self.backbone.config, input_ids, attention_mask, token_type_ids)
        tokens = self.backbone(**inputs).last_hidden_state
        pooled = self.pooling(tokens, attention_mask)
        return self.head(self.dropout(pooled)).squeeze(-1)

    def fingerprint(self) -> str:
        return fingerprint(self, {"kind": "cross-encoder", "pooling": self.pooling_mode})

    def save(
        self,
        folder: str | Path,
        tokenizer_path: str | Path,
        *,
        max_length: int,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a teacher directory (backbone/, head, tokenizer.json, then teacher.json)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(folder / BACKBONE_DIR), safe_serialization=True)
        head = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        head.update({f"pooling.{k}": v for k, v in self.pooling.state_dict().items()})
        save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, folder / HEAD_FILE)
        shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
        meta = {**self._meta(max_length), **dict(extra or {})}
        (folder / TEACHER_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder

    def _meta(self, max_length: int) -> dict[str, Any]:
        """teacher.json's own keys: what a loader needs and which versions wrote it."""
        import transformers

        return {
            "format_version": TEACHER_FORMAT,
            "kind": "cross-encoder",
            "pooling": self.pooling_mode,
            "max_length": max_length,
            "fingerprint": self.fingerprint(),
            "versions": {
                "twinbert_search": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }

    @classmethod
    def load(cls, folder: str | Path) -> tuple[CrossEncoder, dict[str, Any]]:
        """A teacher directory written by `save`, with its teacher.json."""
        folder = Path(folder)
        meta = _read_teacher_json(folder)
        model = cls(load_backbone(folder / BACKBONE_DIR).float(), meta.get("pooling", "cls"))
        state = load_file(str(folder / HEAD_FILE))
        for name, module in (("head", model.head), ("pooling", model.pooling)):
            sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            module.load_state_dict(sub)
        return model, meta


def _read_teacher_json(folder: Path) -> dict[str, Any]:
    """teacher.json, refused when unreadable, newer than this package, or incomplete."""
    path = folder / TEACHER_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable teacher manifest ({exc})", path=str(path)) from None
    if meta.get("format_version", TEACHER_FORMAT) > TEACHER_FORMAT:
        raise ModelError(
            f"{path}: teacher format {meta['format_version']} is newer than this "
            f"twinbert-search ({__version__}) understands; upgrade twinbert-search",
            path=str(path),
        )
    if not (folder / HEAD_FILE).is_file() or not (folder / BACKBONE_DIR).is_dir():
        raise ModelError(
            f"{folder}: incomplete teacher directory (needs {BACKBONE_DIR}/ and {HEAD_FILE})",
            path=str(folder),
        )
    return meta
