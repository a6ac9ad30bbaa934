"""Build the default TwinBERT from all-MiniLM-L6-v2: mean pooling, cosine crossing, ONNX export.

Called by `runtime.models.resolve_model(None, build_default=True)` (the first `index` without
--model, and `twinbert-search build-default-model`), never by the serving path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twinbert_search.manifest import MANIFEST_NAME
from twinbert_search.runtime.models import default_checkpoint, default_model_dir
from twinbert_search.training.export import export_model
from twinbert_search.training.modeling import TwinBert, TwinBertConfig
from twinbert_search.training.tokenizer import tokenizer_file


def build_default_model(target: Path | None = None) -> Path:
    """Build, export and cache the default model; atomic, so a killed build leaves nothing."""
    target = target or default_model_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = default_checkpoint()
    with tempfile.TemporaryDirectory(
        dir=target.parent, prefix=".building-", ignore_cleanup_errors=True
    ) as tmp:
        config = TwinBertConfig(pooling="mean", max_query_length=64, max_doc_length=256)
        model = TwinBert.from_checkpoint(checkpoint, config)
        model.save(tmp, tokenizer_file(checkpoint))
        export_model(tmp, int8=True)
        if not (target / MANIFEST_NAME).is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    return target
