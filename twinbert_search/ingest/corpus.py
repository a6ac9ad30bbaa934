"""`index` as a library call: a corpus on disk into any backend, with one summary back.

The CLI's `index` command and scripts share this: read the corpus, load the model (or only its
manifest when the cluster encodes), open the store the options name, let the store prepare
itself (cluster stores put their template and pipelines, start a rebuild), run the
incremental indexing loop, and say where the documents went.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.ingest.indexing import IndexReport, index_documents, index_in_cluster

if TYPE_CHECKING:
    from twinbert_search.documents import Document
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime import TwinBertRuntime

__all__ = ["IndexRun", "index_corpus"]


@dataclass
class IndexRun:
    """An indexing run's report, plus where it wrote and what the store prepared."""

    report: IndexReport
    backend: str
    location: dict[str, Any] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        extra = {k: v for k, v in self.location.items() if k != "where"}
        return {**self.report.to_dict(), "backend": self.backend, **self.prepared, **extra}


def index_corpus(
    corpus: str | Path,
    *,
    backend: str = "embedded",
    index_dir: str | Path | None = None,
    model: str | Path | None = None,
    int8: bool = False,
    threads: int | None = None,
    openvino: bool = False,
    fmt: str = "auto",
    id_field: str = "_id",
    text_fields: tuple[str, ...] = ("title", "text"),
    codec: str | None = None,
    ann: str | None = "auto",
    shards: int | None = None,
    replicas: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 512,
    prune: bool = False,
    skip_errors: bool = False,
    strict: bool = False,
    rebuild: bool = False,
    delete_old: bool = False,
    model_id: str | None = None,
    progress: bool = True,
    **cluster_options: Any,
) -> IndexRun:
    """Index `corpus` (BEIR folder, JSONL or TSV) with `model` (the default model if None).

    `model_id` names an in-cluster encoder (ML Commons): the cluster encodes the documents and
    only the model's manifest is read here. Malformed records stop the run after the good
    ones before them are written, or with `skip_errors` are reported in `report.errors`.
    Empty documents (no title, no text) are skipped and reported there too, unless `strict`
    makes them malformed records. `shards`, `replicas`: a cluster's new indices' layout.
    """
    from twinbert_search.stores.factory import check_options, open_store

    check_options(backend, index_dir=index_dir, **cluster_options)
    runtime, manifest = _load_model(
        model, int8=int8, threads=threads, openvino=openvino, in_cluster=bool(model_id)
    )
    docs, errors = _read(corpus, fmt, id_field, text_fields, skip_errors=skip_errors, strict=strict)
    with open_store(
        backend,
        index_dir=index_dir,
        writable=True,
        dim=manifest.dim,
        codec=codec,
        ann=ann,
        shards=shards,
        replicas=replicas,
        manifest=manifest,
        **cluster_options,
    ) as store:
        prepared = store.prepare_index(
            manifest, rebuild=rebuild, delete_old=delete_old, model_id=model_id
        )
        if runtime is not None:
            report = index_documents(
                docs,
                store,
                runtime,
                batch_size=batch_size,
                chunk_size=chunk_size,
                prune=prune,
                progress=progress,
            )
        else:  # check_options let a model_id through only with an OpenSearch store
            report = index_in_cluster(
                docs,
                store,  # type: ignore[arg-type]
                model_fingerprint=manifest.fingerprint,
                model_id=str(model_id),
                chunk_size=chunk_size,
                prune=prune,
                progress=progress,
            )
        location = store.location()
    report.errors = errors
    return IndexRun(report=report, backend=backend, location=location, prepared=prepared)


def _load_model(
    model: str | Path | None, *, int8: bool, threads: int | None, openvino: bool, in_cluster: bool
) -> tuple[TwinBertRuntime | None, ModelManifest]:
    """The runtime (None when the cluster encodes) and the manifest the store records.

    The manifest carries the vectors' fingerprint, not the model's: the graph variant (int8,
    OpenVINO, the in-cluster encoder) is recorded, so a store refuses vectors from another.
    """
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.models import resolve_model

    if openvino and in_cluster:
        raise ConfigurationError(
            "--openvino encodes locally; it does not go with --encode-in-cluster"
        )
    model_dir = resolve_model(model, build_default=True)
    if in_cluster:  # no local encoding: the manifest is enough
        from twinbert_search.stores.opensearch.ml import vector_fingerprint

        manifest = ModelManifest.load(model_dir)
        return None, replace(manifest, fingerprint=vector_fingerprint(manifest, int8))
    runtime = TwinBertRuntime.load(
        model_dir,
        int8=int8,
        threads=threads,
        document_graph="openvino-int8" if openvino else None,
    )
    return runtime, replace(runtime.manifest, fingerprint=runtime.fingerprint)


def _read(
    corpus: str | Path,
    fmt: str,
    id_field: str,
    text_fields: tuple[str, ...],
    *,
    skip_errors: bool,
    strict: bool,
) -> tuple[Iterator[Document], list[InputError]]:
    """The corpus as a lazy stream, and the list its skipped records are appended to as the
    stream is read (so it is complete only once the indexing loop has drained it)."""
    from twinbert_search.ingest.readers import read_corpus

    errors: list[InputError] = []
    docs = read_corpus(
        corpus,
        fmt=fmt,
        id_field=id_field,
        text_fields=text_fields,
        on_error="skip" if skip_errors else "raise",
        errors=errors,
        on_empty="error" if strict else "skip",
    )
    return docs, errors
