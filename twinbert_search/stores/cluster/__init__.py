"""What every cluster engine shares, written once and importing no engine client.

A cluster backend (`stores/opensearch/`, `stores/elasticsearch/`) stores the same documents
and follows the same write and read discipline; only its client, its vector field and its
kNN query differ. The shared parts:

    schema       the document's fields, `_meta`, mappings around the vector field, base64
                 float32 for precomputed data, bulk index actions
    queries      metadata filters, BM25 bodies, id paging (query DSL both engines accept)
    reads        hits and mget answers decoded into Candidates, ordered by (-score, id)
    bulk         BulkOptions; streaming bulk with capped backoff on 429/5xx, one
                 BulkIndexError for what still fails
    lifecycle    index names and generations, blue/green alias switching over IndexAdmin
    runs         an indexing run that did not complete, marked in the write index's `_meta`
    errors       the error table: each kind of failure to the package's error
    connection   URL, credentials and environment variables
    writes       the write path's array checks, manifest and model checks, bulk actions
    pipelines    the ingest pipelines' shared description
    store        ClusterStoreBase: the engine-neutral store methods (which index a write
                 goes to, upsert, delete, content hashes, rebuilds, finalize)

An engine sub-package supplies its client (`ClusterConnection.client`), its
`helpers.streaming_bulk` (`bulk.helper_stream`), an `IndexAdmin` adapter over its index
API, a `translate_errors` that maps its exception classes onto `ErrorTable`, and its own
asset rendering (vector mapping, kNN query, pipelines).
"""
