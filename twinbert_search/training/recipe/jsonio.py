"""Atomic JSON for the recipe's artefacts: a killed step leaves the previous file whole."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json", "write_json"]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a killed step leaves the previous file, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A JSON file written by `write_json`."""
    return json.loads(path.read_text())
