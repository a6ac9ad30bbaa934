"""Evaluation: how good a ranking is, measured one way for every caller.

Import from the modules (this package imports none of them, so `import
twinbert_search.evaluation` pulls in neither pytrec_eval nor a model):

- `metrics`     IR metrics through pytrec_eval, named `family@K` everywhere (`ndcg@10`,
                `mrr@10`, `recall@100`, ...; `PRIMARY_METRIC`), and `LatencyRecorder` (per-stage
                p50/p99). Training scores its validation runs with it too.
- `searcher`    `evaluate_searcher`: a `Searcher` over judged queries; one search per query
                (the pipeline `Searcher.search` runs) gives the recall-only and reranked runs,
                their metrics and per-stage latency (`twinbert-search eval`).
- `coverage`    judged documents the store does not hold (`eval` warns with the count).
- `runfile`     TREC run files (`qid Q0 docid rank score tag`), ranked by `(-score, docid)`.
- `provenance`  where a figure was measured: the CPU model and the git commit.
"""
