"""Property-based fuzzing of the HTTP API from its own /openapi.json (schemathesis).

For every operation schemathesis generates valid (positive) and invalid (negative) requests
and runs its default checks on each response: no 5xx, status codes and bodies that match the
schema, invalid data rejected with a 4xx. In-process (ASGI) over the tiny model and the
sample store; derandomized with a bounded number of examples, so it is deterministic and
takes well under a minute. (Hypothesis drives the strategies directly: schemathesis' lazy
pytest fixture does not work with pytest 9.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402

from tests.service.test_service import build_sample_index  # noqa: E402
from twinbert_search.service import ServiceConfig, create_app  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("TWINBERT_FUZZ_EXAMPLES", "80"))  # per operation and mode
OPERATIONS = [
    ("POST", "/search"),
    ("POST", "/rerank"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def api_schema(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    index_dir = build_sample_index(tiny_model, tmp_path_factory.mktemp("fuzz-index"))
    config = ServiceConfig(index_dir=index_dir, model=tiny_model, workers=2, cache_size=64)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(config))


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    found = sorted((op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations())
    assert found == sorted(OPERATIONS)


# The GET routes take no input, so they have no invalid requests to generate.
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode if method == "POST" else [GenerationMode.POSITIVE])
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda x: str(x))
def test_no_5xx_and_responses_match_the_schema(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    examples = MAX_EXAMPLES if method == "POST" else 5

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call()
        statuses.append(response.status_code)
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        case.validate_response(response)

    statuses: list[int] = []
    run()
    if mode is GenerationMode.POSITIVE:  # the run reached the model, not only the validator
        assert 200 in statuses
    else:
        assert statuses and all(400 <= s < 500 for s in statuses)
