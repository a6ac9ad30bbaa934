"""What an imported tower expects of its inputs, kept beside its torch checkpoint.

An imported tower (`twinbert-search models fetch`) was trained with its own pooling and
prefixes (bge-small: the [CLS] vector, and an instruction before each query; e5: "query: " and
"passage: "). Its model directory records them in the manifest, but `models to-torch` writes a
plain Hugging Face checkpoint, which has no place for them; a student started from it with
another pooling, or without the prefixes, starts from vectors the tower never produced.
`to-torch` therefore writes `TOWER_FILE` beside the weights, and training reads it: the
student's pooling (unless one is asked for) and its prefixes, which the student's manifest
keeps so that serving feeds it the same text it was trained on. Readable without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from twinbert_search.errors import ModelError
from twinbert_search.manifest import POOLINGS, ModelManifest

__all__ = ["TOWER_FILE", "TowerConventions", "checkpoint_pooling"]

TOWER_FILE = "twinbert_tower.json"


@dataclass(frozen=True)
class TowerConventions:
    """The pooling and prefixes a checkpoint's tower was trained with, and where it came from."""

    pooling: str
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    source: str = ""  # the imported model's fingerprint

    @classmethod
    def of_manifest(cls, manifest: ModelManifest) -> TowerConventions:
        return cls(
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            query_prefix=manifest.query_prefix,
            document_prefix=manifest.document_prefix,
            source=manifest.fingerprint,
        )

    def save(self, checkpoint: str | Path) -> Path:
        path = Path(checkpoint) / TOWER_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, checkpoint: str | Path | None) -> TowerConventions | None:
        """The checkpoint's conventions; None for a checkpoint without them (any HF BERT)."""
        if checkpoint is None:
            return None
        path = Path(checkpoint) / TOWER_FILE
        if not path.is_file():
            return None
        try:
            conventions = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ModelError(
                f"{path}: unreadable tower conventions ({exc})", path=str(path)
            ) from None
        if conventions.pooling not in POOLINGS:
            raise ModelError(
                f"{path}: pooling must be one of {POOLINGS}, got {conventions.pooling!r}",
                path=str(path),
            )
        return conventions


def checkpoint_pooling(checkpoint: str | Path | None, pooling: str, given: bool) -> str:
    """The pooling to train with: the one asked for, else the checkpoint's own, else `pooling`
    (the command's default)."""
    if given:
        return pooling
    conventions = TowerConventions.read(checkpoint)
    return conventions.pooling if conventions is not None else pooling
