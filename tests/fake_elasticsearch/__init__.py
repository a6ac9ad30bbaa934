"""An in-process fake Elasticsearch, plugged into the official client as its node class.

The real client builds and serialises every request; the fake's node hands it to
`FakeElasticsearch`, which validates it against the official Elasticsearch specification
(tests/elasticsearch_spec.py, when npm could fetch it) and only then answers. A request
outside the specification, or one the fake does not route, fails the test loudly.

Implemented, with the semantics the store relies on (and the real node's answers, checked on
the node of scripts/elasticsearch-node.sh; see
tests/stores/elasticsearch/test_elasticsearch_node.py):
- index templates (matched by pattern and priority, merged under the create body), indices,
  aliases and atomic `_aliases` (add, remove, remove_index), flat settings, mappings,
  refresh; wildcard deletes refused; OpenSearch's `index.knn` refused as an unknown setting;
- near-real-time visibility: search and count see documents as of the last refresh, mget is
  realtime;
- strict dynamic mappings, copy_to, `dense_vector` dimension checks and the unit-length check
  of `dot_product`;
- bulk with per-item outcomes, injected whole-request failures (429, 5xx, 401...) and
  per-document failures (transient statuses or permanent rejections);
- ingest pipelines (set, trim, remove, the vector check script by its tag), or, with
  `ingest_common = False`, the integ-test node's refusal of those processors;
- queries: match_all, term, terms, ids, exists, bool, match (BM25-lite); top-level `knn`
  (Elasticsearch's score per similarity, filter inside the search, quantized kinds scored
  approximately unless `rescore_vector` rescores with floats); retrievers `standard`, `knn`
  and `rrf` (refused with `rrf = False` or `rrf_licensed = False`);
- sort with search_after, `_source` includes; credentials (`accepted_auth`) answered 401.
"""

import pytest

pytest.importorskip("elasticsearch", reason="the elasticsearch client is not installed")

from tests.fake_cluster_common import FakeIndex, FakeUnsupported
from tests.fake_elasticsearch.cluster import FakeElasticsearch, FakeNode
from tests.fake_elasticsearch.common import ApiError, knn_score

__all__ = ["ApiError", "FakeElasticsearch", "FakeIndex", "FakeNode", "FakeUnsupported", "knn_score"]
