"""Fixtures the service tests share: the sample corpus indexed by the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.test_service import build_sample_index
from twinbert_search.search import Searcher


@pytest.fixture(scope="module")
def sample_index(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_index(tiny_model, tmp_path_factory.mktemp("service-index"))


@pytest.fixture(scope="module")
def searcher(sample_index: Path, tiny_model: Path) -> Iterator[Searcher]:
    searcher = Searcher.open(sample_index, tiny_model)
    yield searcher
    searcher.store.close()
