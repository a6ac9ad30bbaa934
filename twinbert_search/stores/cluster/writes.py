"""The write path's checks and actions, the same on every cluster engine.

Before a batch is sent: the arrays are checked (shapes, finite values), the index is refused
when it records another model or dimension, and a new index is rendered from the store's
manifest (or, without one, from the vectors themselves). Then each document becomes one bulk
`index` action whose `_id` is the document id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError, ModelMismatchError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import short_fingerprint
from twinbert_search.stores.cluster import schema


def checked_arrays(
    documents: Sequence[Document], vectors: np.ndarray, precomputed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 vectors (and precomputed rows), one per document, all finite."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(documents)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise InputError(f"expected vectors of shape ({n}, dim), got {vectors.shape}")
    if precomputed is not None:
        precomputed = np.asarray(precomputed, dtype=np.float32)
        if precomputed.ndim != 2 or precomputed.shape[0] != n:
            raise InputError(f"expected precomputed of shape ({n}, h), got {precomputed.shape}")
    bad = ~np.isfinite(vectors).all(axis=1)
    if precomputed is not None:
        bad |= ~np.isfinite(precomputed).all(axis=1)
    if bad.any():
        raise InputError("vector is not finite", record_id=documents[int(np.argmax(bad))].id)
    return vectors, precomputed


def manifest_for(
    manifest: ModelManifest | None, dim: int, fingerprint: str, *, unit: bool = True
) -> ModelManifest:
    """The manifest a new index is rendered from; without one, `unit` says if vectors are."""
    if manifest is None:
        return ModelManifest(dim=dim, fingerprint=fingerprint, normalize=unit)
    if manifest.dim != dim:
        raise ConfigurationError(
            f"vectors have dimension {dim}, the model manifest says {manifest.dim}"
        )
    base = manifest.fingerprint
    if base and fingerprint != base and not fingerprint.startswith(f"{base}:"):
        raise ModelMismatchError(
            "the vectors come from another model than the store's manifest",
            expected=base,
            actual=fingerprint,
        )
    # the graph variant (":int8") is part of what the index records
    return replace(manifest, fingerprint=fingerprint)


def check_recorded(index: str, meta: Mapping[str, Any], dim: int, fingerprint: str) -> None:
    """Refuse writing another model's vectors (or another dimension) into `index`."""
    recorded = meta.get("model_fingerprint")
    if recorded and recorded != fingerprint:
        raise ModelMismatchError(
            f"index {index} was built with model {short_fingerprint(recorded)}, not "
            f"{short_fingerprint(fingerprint)}; rebuild it (blue/green, with --alias) to "
            "change models",
            expected=recorded,
            actual=fingerprint,
        )
    if meta.get("dim") not in (None, dim):
        raise ConfigurationError(f"index {index} holds {meta['dim']}-d vectors, these are {dim}-d")


def vector_actions(
    index: str,
    documents: Sequence[Document],
    vectors: np.ndarray,
    precomputed: np.ndarray | None,
    *,
    engine: str,
) -> list[dict[str, Any]]:
    """One bulk `index` action per document, with its vector (and precomputed half)."""
    actions = []
    for i, doc in enumerate(documents):
        fields: dict[str, Any] = {schema.FIELD_VECTOR: schema.vector_to_list(vectors[i])}
        if precomputed is not None:
            fields[schema.FIELD_PRECOMPUTED] = schema.encode_floats(precomputed[i])
        actions.append(schema.index_action(index, doc, fields, engine=engine))
    return actions
