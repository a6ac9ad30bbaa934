"""Issue 19's cluster scenario on real nodes: `-m opensearch` and `-m elasticsearch`.

The same runs as tests/stores/test_cluster_input_handling.py (a run stopped by a bad record, then
one that completes, with a title-only document): the nodes must see what the fakes see, so
the fakes' `PUT _mapping` (which replaces `_meta` whole) and empty text stay true.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.stores.elasticsearch.test_elasticsearch_node import alias, node_store  # noqa: F401  (the alias fixture)
from tests.stores.test_cluster_input_handling import EXPECTED, scenario
from twinbert_search.stores.opensearch import OpenSearchStore


@pytest.mark.opensearch
def test_the_scenario_on_an_opensearch_node(node_stores: Callable[..., OpenSearchStore]) -> None:
    name = node_stores().alias  # one alias for every store of the scenario
    assert scenario(lambda: node_stores(alias=name)) == EXPECTED


@pytest.mark.elasticsearch
def test_the_scenario_on_an_elasticsearch_node(elasticsearch_url: str, alias: str) -> None:  # noqa: F811
    assert scenario(lambda: node_store(elasticsearch_url, alias)) == EXPECTED
