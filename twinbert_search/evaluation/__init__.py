"""Evaluation: metrics, evaluating a searcher, TREC run files.

Import from the modules: `metrics` (pytrec_eval measures, latency), `searcher` (a Searcher over
queries and qrels), `runfile` (TREC runs), `provenance` (which machine and commit measured).
"""
