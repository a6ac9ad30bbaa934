"""JSON on the wire to a cluster: vectors as the shortest float32 digits, read back bit-exact;
orjson serializers in both clients, with the standard library where orjson refuses; recalls
and fetches ask for the stored `_source` as it is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinbert_search.stores.cluster import queries, reads, schema, wire


def finite_float32(n: int, seed: int = 0) -> np.ndarray:
    """Random bit patterns (every exponent, subnormals, signed zeros) and edge values."""
    bits = np.random.default_rng(seed).integers(0, 2**32, size=n, dtype=np.uint64)
    values = bits.astype(np.uint32).view(np.float32)
    finfo = np.finfo(np.float32)
    edges = np.array(
        [0.0, -0.0, 1.0, -1.0, finfo.max, finfo.min, finfo.tiny, finfo.smallest_subnormal,
         finfo.eps, 0.1, 1 / 3, 16777217.0],
        dtype=np.float32,
    )  # fmt: skip
    return np.concatenate([edges, values[np.isfinite(values)]])


def test_vectors_are_written_as_the_shortest_float32_digits_and_read_back_bit_exact() -> None:
    values = finite_float32(200_000)
    listed = schema.vector_to_list(values)
    for text in (json.dumps(listed), wire.dumps(listed, str).decode()):
        # what a reader does: parse the digits as doubles, round each to float32
        back = np.array(json.loads(text), dtype=np.float64).astype(np.float32)
        assert back.view(np.uint32).tobytes() == values.view(np.uint32).tobytes()
    # no value needs more than 9 significant digits (float32's round-trip bound)
    for value in listed[:12] + listed[-1000:]:
        mantissa = repr(value).lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0")
        assert len(mantissa.rstrip("0") or "0") <= 9, value


def test_short_vectors_halve_a_recall_answer_and_build_the_same_candidates() -> None:
    vectors = np.random.default_rng(1).standard_normal((100, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def answer(rows: list[list[float]]) -> str:
        hits = [
            {"_id": f"d{i}", "_score": 1.0 - i / 1e3, "_source": {"embedding": row}}
            for i, row in enumerate(rows)
        ]
        return json.dumps({"hits": {"hits": hits}})

    before = answer([v.tolist() for v in vectors])  # 17-digit doubles
    after = answer([schema.vector_to_list(v) for v in vectors])
    assert len(after) < 0.65 * len(before)
    for text in (before, after):
        found = reads.candidates_from_hits(wire.loads(text)["hits"]["hits"], 384)
        assert found.vectors.tobytes() == vectors.tobytes()


def test_wire_falls_back_to_the_standard_library_where_orjson_refuses() -> None:
    assert wire.dumps({"n": 2**70}, str) is None  # beyond 64 bits: the caller's fallback
    assert wire.dumps({"v": np.arange(3, dtype=np.float32)}, str) == b'{"v":[0.0,1.0,2.0]}'
    assert wire.loads('{"x": NaN}')["x"] != wire.loads('{"x": NaN}')["x"]  # NaN, via json
    assert wire.loads(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    with pytest.raises(ValueError):
        wire.loads("{not json")


def test_opensearch_client_reads_and_writes_json_with_orjson() -> None:
    from opensearchpy.serializer import JSONSerializer, SerializationError

    from twinbert_search.stores.opensearch import ConnectionOptions
    from twinbert_search.stores.opensearch.serializer import OrjsonSerializer

    client = ConnectionOptions("http://127.0.0.1:9").client()
    serializer = client.transport.serializer
    assert isinstance(serializer, OrjsonSerializer)
    assert client.transport.deserializer.default is serializer
    # numpy float32 written with float32's shortest digits, text kept as UTF-8
    assert serializer.dumps({"v": np.float32(0.1), "s": "é"}) == '{"v":0.1,"s":"é"}'
    assert serializer.dumps("already a body") == "already a body"
    assert serializer.dumps({"n": 2**70}) == '{"n":1180591620717411303424}'  # stdlib fallback
    assert serializer.loads('{"took": 3}') == {"took": 3}
    with pytest.raises(SerializationError):
        serializer.loads("{not json")
    # a serializer given by the caller wins
    plain = ConnectionOptions("http://127.0.0.1:9", client_kwargs={"serializer": JSONSerializer()})
    assert type(plain.client().transport.serializer) is JSONSerializer


def test_elasticsearch_client_reads_and_writes_json_with_orjson() -> None:
    from elasticsearch.serializer import JsonSerializer

    from twinbert_search.stores.elasticsearch import ConnectionOptions
    from twinbert_search.stores.elasticsearch.serializer import OrjsonSerializer

    serializers = ConnectionOptions("http://127.0.0.1:9").client().transport.serializers
    for mimetype in ("application/json", "application/vnd.elasticsearch+json"):
        assert isinstance(serializers.get_serializer(mimetype), OrjsonSerializer)
    serializer = serializers.get_serializer("application/json")
    assert serializer.dumps({"v": np.arange(2, dtype=np.float32)}) == b'{"v":[0.0,1.0]}'
    assert serializer.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'
    assert serializer.loads(b'{"took": 3}') == {"took": 3}
    given = {"application/json": JsonSerializer()}
    plain = ConnectionOptions("http://127.0.0.1:9", client_kwargs={"serializers": given})
    chosen = plain.client().transport.serializers.get_serializer("application/json")
    assert type(chosen) is JsonSerializer


def test_a_recall_asks_for_the_stored_source_as_it_is() -> None:
    # a field list makes the engine parse and write each hit's source again
    assert queries.source_includes(True) is True
    assert queries.source_includes(False) == {"includes": ["doc_id", "embedding", "precomputed"]}
