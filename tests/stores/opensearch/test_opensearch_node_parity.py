"""The fake cluster and the strict checks against a real OpenSearch node: same requests, same
answers (k-NN scores per space type, refusals and their words), and the committed files
accepted by the engine. Run with `python -m pytest -m opensearch`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import TransportError

from tests.fake_opensearch import FakeCluster, FakeConnection, knn_score
from tests.opensearch_node import NEURAL, OpenSearchNode
from tests.opensearch_spec import SpecViolation, load_spec
from tests.stores.opensearch.test_opensearch_integration import corpus
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore, assets
from twinbert_search.stores.opensearch.index_options import IndexOptions

pytestmark = pytest.mark.opensearch

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ModelManifest(dim=16, fingerprint="parity-model")
Stores = Callable[..., OpenSearchStore]


@pytest.fixture
def client(opensearch_node: OpenSearchNode) -> Iterator[Any]:
    client = opensearch_node.connection.client()
    yield client
    client.close()


def answer(call: Callable[[], Any]) -> tuple[int, str | None, str | None]:
    """(status, error type, reason) of one request."""
    try:
        call()
    except TransportError as exc:
        error = exc.info["error"] if isinstance(exc.info, dict) else {}
        return exc.status_code, error.get("type"), error.get("reason")
    return 200, None, None


@contextmanager
def removed_after(
    client: Any,
    *,
    templates: tuple[str, ...] = (),
    ingest: tuple[str, ...] = (),
    search: tuple[str, ...] = (),
) -> Iterator[None]:
    """Delete these templates and pipelines afterwards, whatever happened."""
    try:
        yield
    finally:
        for name in templates:
            client.indices.delete_index_template(name=name, ignore=404)
        for name in ingest:
            client.ingest.delete_pipeline(id=name, ignore=404)
        for name in search:
            client.search_pipeline.delete(id=name, ignore=404)


def space_cases(node: OpenSearchNode) -> list[IndexOptions]:
    base = node.index_options()
    compact = "byte" if base.engine == "lucene" else "fp16"
    return [
        *(IndexOptions.parse(base.describe(), space_type=s, encoding="fp32", replicas=0)
          for s in ("innerproduct", "cosinesimil", "l2")),
        IndexOptions.parse(base.describe(), encoding=compact, replicas=0),
    ]  # fmt: skip


def test_knn_scores_per_space_type_are_the_fakes(
    node_stores: Stores, opensearch_node: OpenSearchNode
) -> None:
    """Raw k-NN scores equal the fake's formula (fp32); a compact encoding's are approximate,
    so recall scores come from the exact vectors: the cosine, in every case."""
    docs, vectors = corpus(40)
    query = vectors[3]
    cosines = vectors @ query
    for options in space_cases(opensearch_node):
        store = node_stores(options.describe())
        store.upsert(docs, vectors, model_fingerprint="it-model")
        store.finalize()
        body = assets.knn_search_body(query, 40, include_text=False)
        hits = store.client.search(index=store.alias, body=body)["hits"]["hits"]
        engine = np.array([h["_score"] for h in hits])
        fake = np.array(
            [knn_score(options.space_type, query, vectors[row(h["_id"])]) for h in hits]
        )
        if options.encoding == "fp32":
            np.testing.assert_allclose(engine, fake, rtol=1e-6, err_msg=options.describe())
        else:  # the graph's quantized copy: 2.19.1's int7 was up to 0.23 off on 16-d vectors
            np.testing.assert_allclose(engine, fake, atol=0.3, err_msg=options.describe())
        found = store.recall(query, 40)
        rows = [row(i) for i in found.ids]
        assert rows == list(np.argsort(-cosines, kind="stable")), options.describe()
        np.testing.assert_allclose(found.recall_scores, cosines[rows], atol=1e-6)
        np.testing.assert_array_equal(found.vectors, vectors[rows])


def row(doc_id: str) -> int:
    return int(doc_id.split("-")[1])


def test_pipeline_refusals_are_the_fakes(client: Any, opensearch_node: OpenSearchNode) -> None:
    """`_meta` on pipelines (checked after the processors), neural-search's processors."""
    name = f"it-parity-{uuid.uuid4().hex[:8]}"
    cluster = FakeCluster(validate=False)
    cluster.neural_search = NEURAL in opensearch_node.plugins
    fake = cluster.client()
    meta = {"_meta": {"twinbert_search": {"format": 1}}}
    bodies = {
        "ingest": {**assets.vector_pipeline(MANIFEST), **meta},
        "search": {**assets.hybrid_search_pipeline(), **meta},
        "search-bare": {"description": "no processors", **meta},
    }
    with removed_after(client, ingest=(name,), search=(name,)):
        refused = {}
        for put, body in bodies.items():
            refused[put] = answer(lambda c=client, b=body, p=put: _put_pipeline(c, p, name, b))
            assert refused[put] == answer(lambda b=body, p=put: _put_pipeline(fake, p, name, b))
    meta_refusal = (
        400,
        "parse_exception",
        f"pipeline [{name}] doesn't support one or more provided configuration parameters [_meta]",
    )
    assert refused["ingest"] == refused["search-bare"] == meta_refusal
    ingest = bodies["ingest"]
    with pytest.raises(SpecViolation, match="take no _meta"):
        load_spec().validate_request("PUT", f"/_ingest/pipeline/{name}", {}, ingest)


def _put_pipeline(client: Any, kind: str, name: str, body: dict[str, Any]) -> Any:
    if kind.startswith("ingest"):
        return client.ingest.put_pipeline(id=name, body=body)
    return client.search_pipeline.put(id=name, body=body)


def test_template_and_search_refusals_are_the_fakes(
    client: Any, opensearch_node: OpenSearchNode
) -> None:
    """Overlapping templates at one priority, an unknown search pipeline: the same 400s."""
    base = f"it-parity-{uuid.uuid4().hex[:8]}"
    cluster = FakeCluster()
    fake = cluster.client()
    outer, inner = assets.AssetNames(base), assets.AssetNames(f"{base}-2024")
    options = opensearch_node.index_options()
    first = assets.index_template(MANIFEST, options, outer)
    clash = {**first, "index_patterns": inner.index_patterns}
    with removed_after(client, templates=(outer.template, inner.template)):
        for c in (client, fake):
            c.indices.put_index_template(name=outer.template, body=first)
        engine = answer(lambda: client.indices.put_index_template(name=inner.template, body=clash))
        assert engine[0] == 400
        assert engine == answer(
            lambda: fake.indices.put_index_template(name=inner.template, body=clash)
        )
        nested = assets.index_template(MANIFEST, options, inner)  # its own priority: accepted
        client.indices.put_index_template(name=inner.template, body=nested)
    body = {"size": 1, "query": {"match_all": {}}}
    unknown = {"search_pipeline": f"{base}-nope"}
    engine = answer(lambda: client.search(index="*", body=body, params=unknown))
    assert engine == (400, "illegal_argument_exception", f"Pipeline {base}-nope is not defined")
    assert engine == answer(lambda: fake.search(index="*", body=body, params=unknown))


def test_encoders_of_the_other_engine_are_refused(client: Any) -> None:
    """Faiss's SQfp16 parameters or an unsupported bit count under lucene: the engine, the
    strict checks and IndexOptions all refuse them."""
    spec = load_spec()
    name = f"it-parity-{uuid.uuid4().hex[:8]}"
    committed = json.loads((ROOT / "index_templates" / "twinbert.opensearch.json").read_text())
    body = {"settings": committed["template"]["settings"],
            "mappings": committed["template"]["mappings"]}  # fmt: skip
    method = body["mappings"]["properties"]["embedding"]["method"]
    for encoder, message in (
        (method["parameters"]["encoder"], "unknown lucene sq encoder parameter"),
        ({"name": "sq", "parameters": {"bits": 4}}, "encoder parameter bits=4"),
        ({"name": "flat"}, "encoder 'flat' is not available with lucene"),
    ):
        bad = json.loads(json.dumps(body))
        lucene = bad["mappings"]["properties"]["embedding"]["method"]
        lucene.update(engine="lucene", parameters={**lucene["parameters"], "encoder": encoder})
        status, kind, _ = answer(lambda b=bad: client.indices.create(index=name, body=b))
        client.indices.delete(index=name, ignore=404)
        assert (status, kind) == (400, "mapper_parsing_exception"), encoder
        with pytest.raises(SpecViolation, match=message):
            spec.validate_request("PUT", f"/{name}", {}, bad)
    with pytest.raises(ConfigurationError, match="fp16 is a Faiss encoding"):
        IndexOptions.parse("lucene:fp16")


def test_the_committed_files_are_accepted(client: Any, opensearch_node: OpenSearchNode) -> None:
    """index_templates/ and pipelines/ as committed (faiss, the docker default): accepted.

    The Maven k-NN zip cannot build a faiss graph, so no index is created from the template.
    """
    name = f"it-committed-{uuid.uuid4().hex[:8]}"
    template = json.loads((ROOT / "index_templates" / "twinbert.opensearch.json").read_text())
    template["index_patterns"] = [f"{name}-*"]  # not the user's `twinbert` indices
    pipelines = {
        kind: json.loads((ROOT / "pipelines" / f"twinbert-{kind}.{suffix}.json").read_text())
        for kind, suffix in (("vectors", "ingest"), ("embed", "ingest"), ("hybrid", "search"))
    }
    neural = NEURAL in opensearch_node.plugins
    with removed_after(client, templates=(name,), ingest=(name, f"{name}-e"), search=(name,)):
        client.indices.put_index_template(name=name, body=template)
        client.ingest.put_pipeline(id=name, body=pipelines["vectors"])
        if neural:  # text_embedding and score-ranker-processor are neural-search's
            client.ingest.put_pipeline(id=f"{name}-e", body=pipelines["embed"])
            client.search_pipeline.put(id=name, body=pipelines["hybrid"])
        else:
            status, _, reason = answer(
                lambda: client.search_pipeline.put(id=name, body=pipelines["hybrid"])
            )
            assert (status, reason) == (400, "Invalid processor type score-ranker-processor")
        stored = client.ingest.get_pipeline(id=name)[name]
        assert stored == pipelines["vectors"]


def test_the_fake_twin_of_a_node_store_answers_alike(
    node_stores: Stores, opensearch_node: OpenSearchNode
) -> None:
    """One batch, through pipeline (a), read back from both: the same documents."""
    store = node_stores()
    docs, vectors = corpus(12)
    cluster = FakeCluster()
    cluster.neural_search = NEURAL in opensearch_node.plugins
    connection = ConnectionOptions(
        "http://fake:9200", client_kwargs={"connection_class": FakeConnection, "cluster": cluster}
    )
    fake = OpenSearchStore(connection, alias=store.alias, index_options=store.index_options)
    for s in (store, fake):
        s.upsert(docs, vectors, model_fingerprint="it-model")
        s.finalize()
    ours, theirs = fake.fetch([d.id for d in docs]), store.fetch([d.id for d in docs])
    assert ours.documents == theirs.documents
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    assert fake.info.extra["indices"] == store.info.extra["indices"]
    assert {k: v for k, v in fake.status().items() if k not in ("url", "cluster")} == {
        k: v for k, v in store.status().items() if k not in ("url", "cluster")
    }
