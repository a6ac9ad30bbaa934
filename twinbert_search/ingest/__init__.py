"""Ingest: reading corpora, queries and qrels, and the incremental indexing loop."""
