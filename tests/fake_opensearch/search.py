"""Search handlers of the fake cluster: the query DSL subset the store sends.

match_all, term, terms, ids, exists, bool, match (term-overlap BM25-lite), knn (exact search,
the plugin's score per space type, the filter applied during the search, Faiss SQfp16
rounding) and hybrid (the RRF score-ranker of the search pipeline; without one, the
engine's raw sub-query lists between sentinel scores); sort on keyword fields with
search_after; `_source` includes. Search and count see documents as of the last refresh.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
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
)
from tests.fake_opensearch.common import HYBRID_DELIMITER, HYBRID_START_STOP, ApiError, knn_score


class SearchApi:
    """`search` and `count`, and the evaluation of queries against an index.

    A mixin of FakeCluster, which holds the state and `resolve` (IndicesApi).
    """

    indices: dict[str, FakeIndex]
    search_pipelines: dict[str, dict[str, Any]]

    # -- search -------------------------------------------------------------------------------

    def _h_count(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        count = 0
        for name in self.resolve(pp.get("index", "*")):
            index = self.indices[name]
            count += len(
                self._evaluate(
                    (body or {}).get("query", {"match_all": {}}), index, index.searchable
                )
            )
        return 200, {"count": count}

    def _h_search(self, pp: dict[str, str], params: dict[str, Any], body: Any) -> tuple[int, Any]:
        body = body or {}
        query = body.get("query", {"match_all": {}})
        size = body.get("size", 10)
        normalization = self._normalization(params.get("search_pipeline"))
        if "hybrid" in query and normalization is None:
            return 200, self._raw_hybrid(query["hybrid"], pp, size, body)
        hits: list[dict[str, Any]] = []
        for name in self.resolve(pp.get("index", "*")):
            index = self.indices[name]
            if "hybrid" in query:
                scores = self._hybrid(query["hybrid"], index, size, normalization)
            else:
                scores = self._evaluate(query, index, index.searchable)
            hits += [
                {
                    "_index": name,
                    "_id": i,
                    "_score": s,
                    "_source": index.searchable[i],
                    **index.hit_seq(i, body),
                }
                for i, s in scores.items()
            ]
        sort = body.get("sort")
        if sort:
            first = sort[0] if isinstance(sort, list) else sort
            ((field_name, order),) = (
                first if isinstance(first, Mapping) else {first: "asc"}
            ).items()
            reverse = (order if isinstance(order, str) else order.get("order", "asc")) == "desc"
            hits = [h for h in hits if get_path(h["_source"], field_name) is not None]
            hits.sort(key=lambda h: get_path(h["_source"], field_name), reverse=reverse)
            for h in hits:
                h["sort"] = [get_path(h["_source"], field_name)]
                h["_score"] = None
            if "search_after" in body:
                after = body["search_after"][0]
                hits = [
                    h for h in hits if (h["sort"][0] < after if reverse else h["sort"][0] > after)
                ]
        else:
            hits.sort(key=lambda h: (-h["_score"], h["_id"]))
        total = len(hits)
        start = body.get("from", 0)
        hits = hits[start : start + size]
        scores = [h["_score"] for h in hits if h["_score"] is not None]
        return 200, self._response(hits, body, total, max(scores) if scores else None)

    @staticmethod
    def _response(
        hits: list[dict[str, Any]], body: Mapping[str, Any], total: int, max_score: float | None
    ) -> dict[str, Any]:
        source_spec = body.get("_source", True)
        for h in hits:
            if source_spec is False:
                del h["_source"]
            elif isinstance(source_spec, Mapping):
                h["_source"] = project_source(h["_source"], source_spec.get("includes", []))
            elif isinstance(source_spec, list):
                h["_source"] = project_source(h["_source"], source_spec)
            else:
                h["_source"] = json.loads(json.dumps(h["_source"]))
        return {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": total, "relation": "eq"},
                "max_score": max_score,
                "hits": hits,
            },
        }

    def _evaluate(
        self, query: Mapping[str, Any], index: FakeIndex, docs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, float]:
        """Matching document ids with their scores."""
        ((kind, spec),) = query.items()
        if kind == "match_all":
            return dict.fromkeys(docs, 1.0)
        if kind in ("term", "terms"):
            ((fname, wanted),) = ((k, v) for k, v in spec.items() if k not in ("boost", "_name"))
            if kind == "term" and isinstance(wanted, Mapping):
                wanted = wanted["value"]
            wanted_set = set(as_list(wanted)) if kind == "terms" else {wanted}
            return {
                i: 1.0
                for i, src in docs.items()
                if wanted_set & set(map(hashable, as_list(get_path(src, fname))))
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
            ((fname, clause),) = spec.items()
            return self._knn(index, docs, fname, clause)
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
        should = as_list(spec.get("should"))
        if should:
            hits: Counter[str] = Counter()
            scores: dict[str, float] = {}
            for clause in should:
                for i, s in self._evaluate(clause, index, docs).items():
                    hits[i] += 1
                    scores[i] = scores.get(i, 0.0) + s
            required = spec.get(
                "minimum_should_match", 0 if (spec.get("must") or spec.get("filter")) else 1
            )
            candidates = {
                i: s + scores.get(i, 0.0) for i, s in candidates.items() if hits[i] >= int(required)
            }
        if not spec.get("must") and not should:
            candidates = dict.fromkeys(candidates, 0.0)
        return candidates

    def _field_text(self, index: FakeIndex, source: Mapping[str, Any], fname: str) -> str:
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

    def _knn(
        self, index: FakeIndex, docs: Mapping[str, Any], fname: str, clause: Mapping[str, Any]
    ) -> dict[str, float]:
        prop = index.properties.get(fname)
        if prop is None or prop.get("type") != "knn_vector":
            raise ApiError(400, "query_shard_exception", f"field [{fname}] is not a knn_vector")
        method = prop.get("method", {})
        space = method.get("space_type", prop.get("space_type", "l2"))
        vector = np.asarray(clause["vector"], dtype=np.float32)
        if vector.shape[0] != prop["dimension"]:
            raise ApiError(
                400,
                "illegal_argument_exception",
                f"Query vector has invalid dimension: {vector.shape[0]}. "
                f"Dimension should be: {prop['dimension']}",
            )
        encoder = method.get("parameters", {}).get("encoder", {})
        fp16 = encoder.get("name") == "sq" and method.get("engine") == "faiss"
        allowed = self._evaluate(clause["filter"], index, docs) if "filter" in clause else docs
        scores = {}
        for i in allowed:
            stored = get_path(docs[i], fname)
            if stored is None:
                continue
            doc = np.asarray(stored, dtype=np.float32)
            if fp16:  # SQfp16 stores the graph's vectors as half floats
                doc = doc.astype(np.float16).astype(np.float32)
            scores[i] = knn_score(space, vector, doc)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: int(clause["k"])]
        return dict(ranked)

    def _normalization(self, pipeline: str | None) -> Mapping[str, Any] | None:
        """The score-ranker processor of the search pipeline a request names, if any."""
        if pipeline is None:
            return None
        if pipeline not in self.search_pipelines:
            raise ApiError(400, "illegal_argument_exception", f"Pipeline {pipeline} is not defined")
        processor = None
        for proc in self.search_pipelines[pipeline].get("phase_results_processors", []):
            if "normalization-processor" in proc:
                raise FakeUnsupported("the normalization processor (the store sends RRF)")
            processor = proc.get("score-ranker-processor", processor)
        return processor

    def _raw_hybrid(
        self, spec: Mapping[str, Any], pp: Mapping[str, str], size: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A hybrid query that no score-ranker processor fuses: neural-search's raw lists.

        Not an error on the engine (2.19.1): per shard, a start marker, then for each
        sub-query a delimiter and its top hits, then a stop marker; markers carry the first
        hit's id and the sentinel scores, and the list is cut at `size` entries.
        """
        hits: list[dict[str, Any]] = []
        matched: set[str] = set()
        scores: list[float] = []
        for name in self.resolve(pp.get("index", "*")):
            index = self.indices[name]
            lists = [
                sorted(self._evaluate(sub, index, index.searchable).items(),
                       key=lambda kv: (-kv[1], kv[0]))[:size]
                for sub in spec["queries"]
            ]  # fmt: skip
            first = next((ranked[0][0] for ranked in lists if ranked), None)
            if first is None:
                continue

            def hit(doc_id: str, score: float, index: FakeIndex = index) -> dict[str, Any]:
                return {"_index": index.name, "_id": doc_id, "_score": score,
                        "_source": index.searchable[doc_id]}  # fmt: skip

            hits.append(hit(first, HYBRID_START_STOP))
            for ranked in lists:
                hits.append(hit(first, HYBRID_DELIMITER))
                hits += [hit(doc_id, score) for doc_id, score in ranked]
                matched.update(doc_id for doc_id, _ in ranked)
                scores += [score for _, score in ranked]
            hits.append(hit(first, HYBRID_START_STOP))
        return self._response(hits[:size], body, len(matched), max(scores) if scores else None)

    def _hybrid(
        self,
        spec: Mapping[str, Any],
        index: FakeIndex,
        size: int,
        processor: Mapping[str, Any] | None,
    ) -> dict[str, float]:
        assert processor is not None
        queries = spec["queries"]
        per_query = []
        for sub in queries:
            scores = self._evaluate(sub, index, index.searchable)
            per_query.append(dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:size]))
        combination = processor.get("combination", {})
        if combination.get("technique") != "rrf":
            raise FakeUnsupported("only the rrf score-ranker")
        return combine_rrf(per_query, int(combination.get("rank_constant", 60)))


def combine_rrf(per_query: Sequence[Mapping[str, float]], rank_constant: int) -> dict[str, float]:
    """neural-search's `score-ranker-processor` (rrf): sum 1 / (rank_constant + rank) over the
    sub-query lists a document is in, ranks from 1 in each list's order; float32 like the
    engine's scores."""
    fused: dict[str, float] = {}
    for top in per_query:
        for rank, doc_id in enumerate(top, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (rank_constant + rank)
    return {i: float(np.float32(s)) for i, s in fused.items()}
