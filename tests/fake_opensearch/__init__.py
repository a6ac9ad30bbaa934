"""An in-process fake OpenSearch cluster, plugged in as an opensearch-py Connection class.

The real client builds and serialises every request; `FakeConnection.perform_request` hands it
to `FakeCluster`, which first validates it against the official API specification (and the
project's strict checks, tests/opensearch_checks.py) and only then answers. A request outside
the specification, or one the fake does not implement, fails the test loudly.

Implemented, with the documented semantics the store relies on:
- index templates (matched by pattern and priority, merged under the create body), indices,
  aliases and atomic `_aliases` (add, remove, remove_index), settings, mappings, refresh;
- near-real-time visibility: search and count see documents as of the last refresh, mget is
  realtime;
- strict dynamic mappings, knn_vector dimension checks, copy_to;
- bulk with per-item outcomes, injected whole-request failures (e.g. 429, 500) and per-document
  failures (transient statuses or permanent rejections);
- ingest pipelines (set, trim, remove, the vector check script by its tag, text_embedding);
- the security plugin refusing a user's missing permission (`deny`: 403 in its words);
- queries: match_all, term, terms, ids, exists, bool, match (term-overlap BM25-lite), knn (exact
  search, score per space type, filter applied during the search, Faiss SQfp16 rounding) and
  hybrid (the RRF score-ranker processor of the search pipeline; without one, the engine's raw
  sub-query lists between marker scores);
- sort on keyword fields with search_after, _source includes;
- what OpenSearch 2.19.1 refuses, with its error types and words (checked against a real node
  by tests/stores/opensearch/test_opensearch_node_parity.py): `_meta` on pipelines,
  templates whose patterns
  overlap at one priority, painless failures as `script_exception` with the message in
  `caused_by`, mapping errors;
- ML Commons: register_meta + upload_chunk, register by URL, deploy, tasks (RUNNING for a few
  polls), models, model search; deployed models really run (onnxruntime), mirroring ML
  Commons' ONNX text-embedding translator.
"""

from tests.fake_cluster_common import FakeIndex, FakeUnsupported
from tests.fake_opensearch.cluster import FakeCluster, FakeConnection
from tests.fake_opensearch.common import ApiError, knn_score
from tests.fake_opensearch.ml import FakeMLEmbedder, FakeTask
from tests.fake_opensearch.onnx_model import TINY_WORDS, build_onnx_model_dir, encode_with_onnx

__all__ = [
    "TINY_WORDS",
    "ApiError",
    "FakeCluster",
    "FakeConnection",
    "FakeIndex",
    "FakeMLEmbedder",
    "FakeTask",
    "FakeUnsupported",
    "build_onnx_model_dir",
    "encode_with_onnx",
    "knn_score",
]
