"""The serving path never imports torch: the service, the searcher and the CLI's serving
commands run on onnxruntime and numpy, and a missing default model is an error that says how
to build it, not a build (which would import torch) behind the caller's back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys
from pathlib import Path

import twinbert_search.cli
import twinbert_search.search
import twinbert_search.service
from twinbert_search.errors import ModelError
from twinbert_search.service import ServiceConfig
from twinbert_search.service.app import load_searcher
from twinbert_search.stores.embedded import EmbeddedStore

index_dir = Path(sys.argv[1])
with EmbeddedStore.create_or_open(index_dir, dim=8) as store:
    store.finalize()
try:
    load_searcher(ServiceConfig(index_dir=index_dir))
    error = None
except ModelError as exc:
    error = str(exc)
heavy = sorted(m for m in ("torch", "transformers", "onnx") if m in sys.modules)
print(json.dumps({"error": error, "heavy": heavy}))
"""


def test_the_service_on_an_empty_model_cache_imports_no_torch(tmp_path: Path) -> None:
    env = {**os.environ, "TWINBERT_SEARCH_HOME": str(tmp_path / "empty-cache")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "ix")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"the serving path imported {result['heavy']}"
    assert result["error"] is not None, "a searcher opened without any model"
    assert "default model is not built" in result["error"]
    assert "twinbert-search build-default-model" in result["error"]
    assert not (tmp_path / "empty-cache" / "models").exists(), "nothing was built"
