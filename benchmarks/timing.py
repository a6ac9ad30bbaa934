"""Latency sampling, percentiles and the machine description shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.evaluation.provenance import cpu_model, git_state


def summary_ms(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    """p50 / p99 / mean of latency samples in milliseconds (and their count)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan"), "n": 0}
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
        "n": int(values.size),
    }


def sample_ms(call: Callable[[int], Any], n: int, warmup: int = 3) -> list[float]:
    """Milliseconds of `call(i)` for i in range(n), after `warmup` untimed calls."""
    for i in range(warmup):
        call(i)
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def _version(package: str) -> str | None:
    """An optional package's version, None where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine(repo: Path) -> dict[str, Any]:
    """What the numbers were measured on, including the load before the run."""
    import faiss
    import onnxruntime

    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "faiss": faiss.__version__,
        "openvino": _version("openvino"),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "git": dict(zip(("commit", "dirty"), git_state(repo), strict=True)),
    }
