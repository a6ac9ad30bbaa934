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
    assets       AssetNames, the index template's frame, the live settings
    index_options  space types, the checks and the parser both index descriptions share
    store        ClusterStoreBase: every store method both engines do alike (constructor,
                 assets, writes, rebuilds, recall, fetch, info, status) behind small hooks

An engine sub-package supplies its client (`ClusterConnection.client`), a store that
implements `ClusterStoreBase`'s hooks (the client's calls and `helpers.streaming_bulk`, the
kNN body and scores), an `IndexAdmin` adapter over its index API (`lifecycle.ClientAdmin`
holds the calls both clients spell alike), a `translate_errors` that hands its exception
classes to `ErrorTable.translating`, and its own asset rendering (vector mapping, kNN
query, pipelines).
"""
