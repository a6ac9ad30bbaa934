"""Search handlers of the fake cluster: the query DSL subset the store sends.

match_all, term, terms, ids, exists, bool, match (term-overlap BM25-lite); the top-level
`knn` (exact search over the graph's copy of the vectors, Elasticsearch's score per
similarity, the filter applied during the search, and `rescore_vector` rescoring with the
float vectors, without which a quantized kind's scores are approximate); the `standard`,
`knn` and `rrf` retrievers (`rrf` refused as a node without rank-rrf, or a basic licence,
refuses it); sort with search_after; `_source` includes. Search and count see documents as
of the last refresh.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from tests.fake_cluster_common import (
    FakeIndex,
    FakeUnsupported,
    as_list,
    get_path,
    hashable,
    project_source,
    tokenize,
    without_unnamed_vectors,
)
from tests.fake_elasticsearch.common import ApiError, knn_score, quantized

Scores = dict[tuple[str, str], float]  # (index, id) -> score


class SearchApi:
    """A mixin of FakeElasticsearch, which holds the state and `resolve`."""

    indices: dict[str, FakeIndex]
    rrf: bool
    rrf_licensed: bool

    def _h_count(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        query = (body or {}).get("query", {"match_all": {}})
        count = sum(
            len(self._evaluate(query, self.indices[n], self.indices[n].searchable))
            for n in self.resolve(pp["index"])  # type: ignore[attr-defined]
        )
        return 200, {"count": count, "_shards": {"total": 1, "successful": 1, "failed": 0}}

    def _h_search(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        body = body or {}
        size = body.get("size", 10)
        names = self.resolve(pp["index"])  # type: ignore[attr-defined]
        if "retriever" in body:
            if "query" in body or "knn" in body:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    "cannot specify [retriever] and [query] or [knn]",
                )
            scores = self._retriever(body["retriever"], names)
        elif "knn" in body:
            if "query" in body:
                raise FakeUnsupported("query and knn together (their scores add up)")
            scores = {}
            for clause in as_list(body["knn"]):
                scores.update(self._knn(clause, names))
        else:
            query = body.get("query", {"match_all": {}})
            scores = {
                (n, i): s
                for n in names
                for i, s in self._evaluate(
                    query, self.indices[n], self.indices[n].searchable
                ).items()
            }
        hits = [
            {
                "_index": n,
                "_id": i,
                "_score": s,
                "_source": self.indices[n].searchable[i],
                **self.indices[n].hit_seq(i, body),
            }
            for (n, i), s in scores.items()
        ]
        hits = self._sorted(hits, body)
        total = len(hits)
        hits = hits[body.get("from", 0) : body.get("from", 0) + size]
        spec = body.get("_source", True)
        for h in hits:
            if spec is False:
                del h["_source"]
                continue
            if isinstance(spec, Mapping):
                includes = as_list(spec.get("includes"))
            elif isinstance(spec, (list, str)):
                includes = as_list(spec)
            else:
                includes = []
            mappings = self.indices[h["_index"]].mappings
            h["_source"] = without_unnamed_vectors(
                project_source(h["_source"], includes), mappings, includes
            )
        scored = [h["_score"] for h in hits if h["_score"] is not None]
        return 200, {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": total, "relation": "eq"},
                "max_score": max(scored) if scored else None,
                "hits": hits,
            },
        }

    @staticmethod
    def _sorted(hits: list[dict[str, Any]], body: Mapping[str, Any]) -> list[dict[str, Any]]:
        sort = body.get("sort")
        if not sort:
            return sorted(hits, key=lambda h: (-h["_score"], h["_id"]))
        first = as_list(sort)[0]
        ((field, order),) = (first if isinstance(first, Mapping) else {first: "asc"}).items()
        reverse = (order if isinstance(order, str) else order.get("order", "asc")) == "desc"
        hits = [h for h in hits if get_path(h["_source"], field) is not None]
        hits.sort(key=lambda h: get_path(h["_source"], field), reverse=reverse)
        for h in hits:
            h["sort"], h["_score"] = [get_path(h["_source"], field)], None
        if "search_after" in body:
            after = body["search_after"][0]
            hits = [h for h in hits if (h["sort"][0] < after if reverse else h["sort"][0] > after)]
        return hits

    # -- retrievers -----------------------------------------------------------------------------

    def _retriever(self, spec: Mapping[str, Any], names: list[str]) -> Scores:
        ((kind, cfg),) = spec.items()
        if kind == "standard":
            query = cfg.get("query", {"match_all": {}})
            return {
                (n, i): s
                for n in names
                for i, s in self._evaluate(
                    query, self.indices[n], self.indices[n].searchable
                ).items()
            }
        if kind == "knn":
            return self._knn(cfg, names)
        if kind == "rrf":
            if not self.rrf:
                raise ApiError(400, "parsing_exception", "unknown retriever [rrf]", line=1, col=21)
            if not self.rrf_licensed:
                raise ApiError(
                    403,
                    "security_exception",
                    "current license is non-compliant for [Reciprocal Rank Fusion (RRF)]",
                    license_expired_feature="Reciprocal Rank Fusion (RRF)",
                )
            window = cfg.get("rank_window_size", 10)
            constant = cfg.get("rank_constant", 60)
            fused: Scores = {}
            for child in cfg["retrievers"]:
                ranked = sorted(
                    self._retriever(child, names).items(), key=lambda kv: (-kv[1], kv[0][1])
                )
                for rank, (key, _) in enumerate(ranked[:window], start=1):
                    fused[key] = fused.get(key, 0.0) + 1.0 / (constant + rank)
            return fused
        raise ApiError(400, "parsing_exception", f"unknown retriever [{kind}]")

    # -- queries --------------------------------------------------------------------------------

    def _evaluate(
        self, query: Mapping[str, Any], index: FakeIndex, docs: Mapping[str, Any]
    ) -> dict[str, float]:
        ((kind, spec),) = query.items()
        if kind == "match_all":
            return dict.fromkeys(docs, 1.0)
        if kind in ("term", "terms"):
            ((fname, wanted),) = ((k, v) for k, v in spec.items() if k not in ("boost", "_name"))
            if kind == "term" and isinstance(wanted, Mapping):
                wanted = wanted["value"]
            allowed = set(as_list(wanted)) if kind == "terms" else {wanted}
            return {
                i: 1.0
                for i, src in docs.items()
                if allowed & set(map(hashable, as_list(get_path(src, fname))))
            }
        if kind == "ids":
            return {i: 1.0 for i in spec["values"] if i in docs}
        if kind == "exists":
            return {i: 1.0 for i, src in docs.items() if get_path(src, spec["field"]) is not None}
        if kind == "bool":
            return self._bool(spec, index, docs)
        if kind == "match":
            ((fname, value),) = spec.items()
            text = value["query"] if isinstance(value, Mapping) else value
            return self._match(index, docs, fname, str(text))
        if kind == "knn":
            raise FakeUnsupported("the knn query (the store sends the top-level knn)")
        raise FakeUnsupported(f"query type {kind}")

    def _bool(
        self, spec: Mapping[str, Any], index: FakeIndex, docs: Mapping[str, Any]
    ) -> dict[str, float]:
        candidates = dict.fromkeys(docs, 0.0)
        for clause in as_list(spec.get("filter")):
            matched = self._evaluate(clause, index, docs)
            candidates = {i: s for i, s in candidates.items() if i in matched}
        for clause in as_list(spec.get("must")):
            matched = self._evaluate(clause, index, docs)
            candidates = {i: s + matched[i] for i, s in candidates.items() if i in matched}
        for clause in as_list(spec.get("must_not")):
            matched = self._evaluate(clause, index, docs)
            candidates = {i: s for i, s in candidates.items() if i not in matched}
        if spec.get("should"):
            raise FakeUnsupported("bool.should")
        return candidates

    @staticmethod
    def _field_text(index: FakeIndex, source: Mapping[str, Any], fname: str) -> str:
        sources = [n for n, p in index.properties.items() if fname in as_list(p.get("copy_to"))]
        parts = (
            [str(get_path(source, n) or "") for n in sources]
            if sources
            else [str(get_path(source, fname) or "")]
        )
        return " ".join(parts)

    def _match(
        self, index: FakeIndex, docs: Mapping[str, Any], fname: str, text: str
    ) -> dict[str, float]:
        terms = set(tokenize(text))
        tokenised = {
            i: Counter(tokenize(self._field_text(index, src, fname))) for i, src in docs.items()
        }
        n = max(len(tokenised), 1)
        df = Counter(t for counts in tokenised.values() for t in counts if t in terms)
        out: dict[str, float] = {}
        for i, counts in tokenised.items():
            score = sum(
                math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                * counts[t]
                * 2.2
                / (counts[t] + 1.2)
                for t in terms
                if counts[t]
            )
            if score > 0:
                out[i] = score
        return out

    # -- kNN ------------------------------------------------------------------------------------

    def _knn(self, clause: Mapping[str, Any], names: list[str]) -> Scores:
        k, candidates = int(clause.get("k", 10)), int(clause.get("num_candidates", 0) or 0)
        if candidates and candidates < k:
            raise ApiError(
                400, "illegal_argument_exception", "[num_candidates] cannot be less than [k]"
            )
        if candidates > 10_000 or k > 10_000:
            raise ApiError(
                400, "illegal_argument_exception", "[num_candidates] cannot exceed [10000]"
            )
        fname = clause["field"]
        vector = np.asarray(clause["query_vector"], dtype=np.float32)
        oversample = (clause.get("rescore_vector") or {}).get("oversample")
        scores: Scores = {}
        for name in names:
            index = self.indices[name]
            prop = index.properties.get(fname)
            if prop is None or prop.get("type") != "dense_vector":
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"field [{fname}] does not exist in the mapping",
                )
            if vector.shape[0] != prop["dims"]:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"The query vector has a different number of dimensions [{vector.shape[0]}] "
                    f"than the document vectors [{prop['dims']}].",
                )
            kind = (prop.get("index_options") or {}).get("type", "int8_hnsw")
            similarity = prop.get("similarity", "cosine")
            docs = index.searchable
            allowed = self._evaluate(clause["filter"], index, docs) if "filter" in clause else docs
            approx = {}
            for i in allowed:
                stored = get_path(docs[i], fname)
                if stored is not None:
                    doc = np.asarray(stored, dtype=np.float32)
                    approx[i] = (knn_score(similarity, vector, quantized(doc, kind)), doc)
            ranked = sorted(approx.items(), key=lambda kv: (-kv[1][0], kv[0]))
            if oversample:  # the float vectors rescore the graph's best k * oversample
                ranked = ranked[: math.ceil(k * oversample)]
                exact = {i: knn_score(similarity, vector, d) for i, (_, d) in ranked}
                top = sorted(exact.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            else:
                top = [(i, s) for i, (s, _) in ranked[:k]]
            scores.update({(name, i): s for i, s in top})
        return dict(sorted(scores.items(), key=lambda kv: -kv[1])[:k])
