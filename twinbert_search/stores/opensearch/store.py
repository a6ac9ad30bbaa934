"""The OpenSearch store: kNN recall in the cluster, the rerank's inputs in the same round trip.

Documents are indexed with their TwinBERT vectors (computed by the sidecar, or in the cluster
by ML Commons); a `knn` query returns the candidates with their stored vectors and optional
precomputed crossing data, so the Python side reranks without a second request.

Writes go through opensearch-py's `streaming_bulk` (chunks by count and bytes, one outcome per
document); documents rejected with 429 or 5xx are resent with capped exponential backoff, and
what still fails is reported at the end as one `BulkIndexError(errors)`. `_id` is the document
id, so a rerun after a failure rewrites the same documents instead of duplicating them.

With an alias, a rebuild is blue/green: documents go to a new concrete index
`<alias>-<generation>` (built with refresh off and no replicas), and `finalize()` restores its
settings, refreshes it and moves the alias in one `_aliases` call. A rebuild that failed part
way is resumed by the next one (`begin_rebuild(resume=True)`), which writes into the same
unaliased generation, so incremental indexing only sends what is missing there.

Credentials never reach logs, reprs or error messages: the URL is stored without them and the
password field is excluded from the options' repr.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import (
    BackendUnavailableError,
    BulkIndexError,
    ConfigurationError,
    InputError,
    ModelMismatchError,
    StoreError,
)
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.base import (
    Candidates,
    Filters,
    StoreInfo,
    VectorStore,
    short_fingerprint,
)
from twinbert_search.stores.opensearch import assets
from twinbert_search.stores.opensearch.assets import IndexOptions

logger = logging.getLogger(__name__)

ENV_URL = "OPENSEARCH_URL"
ENV_USERNAME = "OPENSEARCH_USERNAME"
ENV_PASSWORD = "OPENSEARCH_PASSWORD"
ENV_CA_CERTS = "OPENSEARCH_CA_CERTS"
ENV_VERIFY_CERTS = "OPENSEARCH_VERIFY_CERTS"  # "false" only for local demo clusters
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MGET_BATCH = 1000
SCAN_PAGE = 1000
MAX_ID_BYTES = 512
_GENERATION = re.compile(r"^(?P<base>.+)-(?P<gen>\d{6})$")


@dataclass(frozen=True)
class ConnectionOptions:
    """Where the cluster is and how to authenticate; `url` never keeps credentials.

    Credentials in the URL (`https://user:pass@host:9200`) move to `username`/`password`, and
    explicit values win over them. `client_kwargs` reaches opensearch-py unchanged (a custom
    `connection_class` in tests, for instance).
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    timeout: float = 30.0
    max_retries: int = 3
    client_kwargs: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url if "://" in self.url else f"http://{self.url}")
        if parts.scheme not in ("http", "https"):
            raise ConfigurationError(f"the OpenSearch URL must be http(s), got {parts.scheme!r}")
        if not parts.hostname:
            raise ConfigurationError("the OpenSearch URL has no host")
        if parts.username and self.username is None:
            object.__setattr__(self, "username", unquote(parts.username))
        if parts.password and self.password is None:
            object.__setattr__(self, "password", unquote(parts.password))
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        port = f":{parts.port}" if parts.port else ""
        object.__setattr__(self, "url", f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}")
        if self.password is not None and self.username is None:
            raise ConfigurationError("a password was given without a username")

    @classmethod
    def from_env(cls, url: str | None = None, **overrides: Any) -> ConnectionOptions:
        """Flags first, then OPENSEARCH_URL/_USERNAME/_PASSWORD/_CA_CERTS/_VERIFY_CERTS."""
        url = url or os.environ.get(ENV_URL)
        if not url:
            raise ConfigurationError(f"no OpenSearch URL: pass --url or set {ENV_URL}")
        overrides.setdefault("username", os.environ.get(ENV_USERNAME) or None)
        overrides.setdefault("password", os.environ.get(ENV_PASSWORD) or None)
        overrides.setdefault("ca_certs", os.environ.get(ENV_CA_CERTS) or None)
        verify = os.environ.get(ENV_VERIFY_CERTS, "true").strip().lower()
        overrides.setdefault("verify_certs", verify not in ("0", "false", "no", "off"))
        return cls(url=url, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def safe_url(self) -> str:
        """The URL as it may appear in messages (it never holds credentials)."""
        return self.url

    def client(self) -> Any:
        """An opensearch-py client; TLS verification stays on unless explicitly disabled."""
        from opensearchpy import OpenSearch

        parts = urlsplit(self.url)
        use_ssl = parts.scheme == "https"
        host: dict[str, Any] = {
            "host": parts.hostname,
            "port": parts.port or 9200,
            "scheme": parts.scheme,
        }
        if parts.path:
            host["url_prefix"] = parts.path
        kwargs: dict[str, Any] = {
            "hosts": [host],
            "use_ssl": use_ssl,
            "verify_certs": self.verify_certs,
            "ssl_show_warn": self.verify_certs,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "retry_on_timeout": True,
            "retry_on_status": (502, 503, 504),
        }
        if self.username is not None:
            kwargs["http_auth"] = (self.username, self.password or "")
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if use_ssl and not self.verify_certs:
            logger.warning("TLS certificate verification is disabled for %s", self.safe_url)
        kwargs.update(self.client_kwargs)
        return OpenSearch(**kwargs)


@dataclass(frozen=True)
class BulkOptions:
    """Bulk chunking and retry policy (retries apply to 429 and 5xx only)."""

    chunk_size: int = 500
    max_chunk_bytes: int = 50 * 1024 * 1024
    max_retries: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    use_pipeline: bool = True  # run the vector-checking ingest pipeline on each document

    def backoff(self, attempt: int) -> float:
        """Seconds before retry `attempt` (1-based): doubling from initial_backoff, capped."""
        return float(min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1)))


@contextmanager
def translate_errors(safe_url: str, what: str) -> Iterator[None]:
    """Turn opensearch-py exceptions into the package's errors, naming no credentials."""
    from opensearchpy import exceptions as os_exc

    try:
        yield
    except os_exc.ConnectionTimeout as exc:
        raise BackendUnavailableError(f"{what}: OpenSearch at {safe_url} timed out") from exc
    except os_exc.ConnectionError as exc:
        raise BackendUnavailableError(
            f"{what}: cannot reach OpenSearch at {safe_url} ({type(exc).__name__}); "
            "check --url, TLS (--ca-certs) and that the cluster is up"
        ) from exc
    except os_exc.AuthenticationException as exc:
        raise StoreError(
            f"{what}: OpenSearch at {safe_url} rejected the credentials "
            f"(check --username and {ENV_PASSWORD})"
        ) from exc
    except os_exc.AuthorizationException as exc:
        raise StoreError(f"{what}: permission denied by OpenSearch ({_reason(exc)})") from exc
    except os_exc.TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else None
        message = f"{what}: OpenSearch answered {exc.status_code}: {_reason(exc)}"
        if status is None or status == 429 or status >= 500:
            raise BackendUnavailableError(message) from exc
        raise StoreError(message) from exc


def _reason(exc: Any) -> str:
    info = getattr(exc, "info", None)
    if isinstance(info, Mapping) and isinstance(info.get("error"), Mapping):
        error = info["error"]
        return f"{error.get('type', 'error')}: {str(error.get('reason', ''))[:500]}"
    return str(getattr(exc, "error", exc))[:500]


@dataclass
class _Rebuild:
    old_indices: list[str]
    delete_old: bool
    alias_is_index: bool


class OpenSearchStore(VectorStore):
    """TwinBERT documents in an OpenSearch index (or behind an alias, for blue/green builds)."""

    def __init__(
        self,
        connection: ConnectionOptions | Any,
        *,
        index: str | None = None,
        alias: str | None = None,
        manifest: ModelManifest | None = None,
        index_options: IndexOptions | None = None,
        bulk: BulkOptions | None = None,
        ef_search: int | None = None,
        hybrid_weights: Sequence[float] = assets.DEFAULT_HYBRID_WEIGHTS,
        sleep: Callable[[float], None] = time.sleep,
        read_cache_seconds: float = 30.0,
    ) -> None:
        if not index and not alias:
            raise ConfigurationError("give an index name, an alias, or both")
        for name in (index, alias):
            if name is not None and (
                name != name.lower() or not name or name.startswith(("_", "-"))
            ):
                raise ConfigurationError(
                    f"invalid index or alias name {name!r}: lowercase, not starting with _ or -"
                )
        if isinstance(connection, ConnectionOptions):
            self.options: ConnectionOptions | None = connection
            self.client = connection.client()
            self._safe_url = connection.safe_url
        else:  # an opensearch-py client made by the caller
            self.options = None
            self.client = connection
            self._safe_url = "the configured OpenSearch cluster"
        self.index = index
        self.alias = alias
        self.manifest = manifest
        self.index_options = index_options or IndexOptions()
        self.index_options.validate()
        self.bulk = bulk or BulkOptions()
        self.ef_search = ef_search
        self.hybrid_weights = tuple(hybrid_weights)
        self.names = assets.AssetNames(alias or index or assets.DEFAULT_BASE)
        self._sleep = sleep
        self._write_index: str | None = None
        self._created: str | None = None  # created by this store; finalize() makes it live
        self._rebuild: _Rebuild | None = None
        self._meta_cache: dict[str, dict[str, Any]] = {}
        self.hybrid_available: bool | None = None
        self.read_cache_seconds = read_cache_seconds
        self._read_state: tuple[float, int, str] | None = None
        self._embed_pipeline_for: str | None = None

    def __repr__(self) -> str:
        target = self.alias or self.index
        return f"OpenSearchStore({self._safe_url!r}, target={target!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _errors(self, what: str) -> Any:
        return translate_errors(self._safe_url, what)

    @property
    def read_target(self) -> str:
        return self.alias or self.index or ""

    def _concrete_indices(self, name: str) -> list[str]:
        """The indices `name` refers to ([] if nothing): itself, or an alias's members."""
        with self._errors(f"resolve {name}"):
            if self.client.indices.exists_alias(name=name):
                return sorted(self.client.indices.get_alias(name=name))
            if self.client.indices.exists(index=name):
                return [name]
        return []

    def _index_meta(self, index: str) -> dict[str, Any]:
        if index not in self._meta_cache:
            with self._errors(f"read the mapping of {index}"):
                mapping = self.client.indices.get_mapping(index=index)
            mappings = next(iter(mapping.values()))["mappings"]
            meta = dict((mappings.get("_meta") or {}).get(assets.META_KEY) or {})
            vector = mappings.get("properties", {}).get(assets.FIELD_VECTOR, {})
            meta.setdefault("dim", vector.get("dimension"))
            self._meta_cache[index] = meta
        return self._meta_cache[index]

    def _space_type(self, index: str) -> str:
        ann = self._index_meta(index).get("ann")
        return assets.IndexOptions.parse(ann).space_type if ann else self.index_options.space_type

    def _manifest_for(self, dim: int, fingerprint: str, *, unit: bool = True) -> ModelManifest:
        """The manifest an index is rendered from; without one, `unit` says if vectors are."""
        if self.manifest is not None:
            if self.manifest.dim != dim:
                raise ConfigurationError(
                    f"vectors have dimension {dim}, the model manifest says {self.manifest.dim}"
                )
            base = self.manifest.fingerprint
            if base and fingerprint != base and not fingerprint.startswith(f"{base}:"):
                raise ModelMismatchError(
                    "the vectors come from another model than the store's manifest",
                    expected=base,
                    actual=fingerprint,
                )
            # the graph variant (":int8") is part of what the index records
            return replace(self.manifest, fingerprint=fingerprint)
        return ModelManifest(dim=dim, fingerprint=fingerprint, normalize=unit)

    # -- assets -----------------------------------------------------------------------------

    def put_assets(self, manifest: ModelManifest, *, model_id: str | None = None) -> dict[str, str]:
        """Create the index template and pipelines when missing or rendered for another model.

        Returns what was done per asset ("created", "updated", "kept", "unavailable").
        """
        done: dict[str, str] = {}
        template = assets.index_template(manifest, self.index_options, self.names)
        with self._errors("put the index template"):
            existing = self.client.indices.get_index_template(name=self.names.template, ignore=404)
            current = next((t["index_template"] for t in existing.get("index_templates", [])), None)
            if current is None or current.get("_meta") != template["_meta"]:
                self.client.indices.put_index_template(name=self.names.template, body=template)
                done["template"] = "created" if current is None else "updated"
            else:
                done["template"] = "kept"
        pipelines = {self.names.vector_pipeline: assets.vector_pipeline(manifest)}
        if model_id:
            pipelines[self.names.embed_pipeline] = assets.embedding_pipeline(manifest, model_id)
        for name, body in pipelines.items():
            with self._errors(f"put the ingest pipeline {name}"):
                existing = self.client.ingest.get_pipeline(id=name, ignore=404)
                current = existing.get(name)
                if (
                    current is None
                    or current.get("_meta") != body["_meta"]
                    or (current.get("processors") != body["processors"])
                ):
                    self.client.ingest.put_pipeline(id=name, body=body)
                    done[name] = "created" if current is None else "updated"
                else:
                    done[name] = "kept"
        done[self.names.hybrid_pipeline] = self._put_hybrid_pipeline()
        return done

    def _put_hybrid_pipeline(self) -> str:
        from opensearchpy.exceptions import RequestError

        name = self.names.hybrid_pipeline
        body = assets.hybrid_search_pipeline(self.hybrid_weights)
        with self._errors(f"put the search pipeline {name}"):
            existing = self.client.search_pipeline.get(id=name, ignore=404)
            if existing.get(name) == body:
                self.hybrid_available = True
                return "kept"
            try:
                self.client.search_pipeline.put(id=name, body=body)
            except RequestError as exc:  # no neural-search plugin: hybrid recall is off
                logger.warning("hybrid search is unavailable: %s", _reason(exc))
                self.hybrid_available = False
                return "unavailable"
        self.hybrid_available = True
        return "created" if name not in existing else "updated"

    # -- index lifecycle --------------------------------------------------------------------

    def _next_generation(self, base: str) -> str:
        with self._errors(f"list the indices of {base}"):
            found = self.client.indices.get(index=f"{base}-*", ignore=404)
        gens = [int(m["gen"]) for n in found if (m := _GENERATION.match(n)) and m["base"] == base]
        return f"{base}-{max(gens, default=0) + 1:06d}"

    def _resolve_write_index(self) -> str | None:
        """The concrete index writes go to, or None when it has yet to be created.

        An index left in its build settings by an interrupted run is taken up again (and made
        live by the next `finalize()`), so a rerun only sends what it lacks.
        """
        if self._write_index is not None:
            return self._write_index
        if self.alias:
            members = self._concrete_indices(self.alias)
            if len(members) > 1:
                raise StoreError(
                    f"alias {self.alias} points to {len(members)} indices ({', '.join(members)}); "
                    "writes need exactly one"
                )
            if members:
                self._write_index = members[0]
            else:
                self._write_index = self._created = self._unfinished_build(after=[])
        elif self.index and self._concrete_indices(self.index):
            self._write_index = self.index
            if self._is_building(self.index):
                self._created = self.index
        return self._write_index

    def _is_building(self, index: str) -> bool:
        """Still in build settings (refresh off), i.e. never made live by finalize()."""
        with self._errors(f"read the settings of {index}"):
            settings = self.client.indices.get_settings(
                index=index, params={"flat_settings": "true"}
            )
        flat = next(iter(settings.values()), {}).get("settings", {})
        return str(flat.get("index.refresh_interval")) == "-1"

    def _unfinished_build(self, after: Sequence[str]) -> str | None:
        """A generation newer than `after`, still in build settings (an interrupted build)."""
        if self.index:
            candidates = [self.index] if self._concrete_indices(self.index) else []
        else:
            with self._errors(f"list the indices of {self.alias}"):
                found = self.client.indices.get(index=f"{self.alias}-*", ignore=404)
            newest_live = max(
                (int(m["gen"]) for n in after if (m := _GENERATION.match(n))), default=0
            )
            candidates = sorted(
                name
                for name in found
                if (m := _GENERATION.match(name))
                and m["base"] == self.alias
                and int(m["gen"]) > newest_live
            )
        candidates = [c for c in candidates if c not in after]
        if candidates and self._is_building(candidates[-1]):
            logger.info("taking up the unfinished build in %s", candidates[-1])
            return candidates[-1]
        return None

    def _create_index(self, manifest: ModelManifest) -> str:
        self.put_assets(manifest)
        # no --index: an alias gets numbered generations (<alias>-000001, ...)
        name = self.index or self._next_generation(self.alias or "")
        body = assets.index_body(manifest, self.index_options, building=True)
        with self._errors(f"create the index {name}"):
            self.client.indices.create(index=name, body=body)
        logger.info("created index %s (%s)", name, self.index_options.describe())
        self._created = name
        self._write_index = name
        self._meta_cache.pop(name, None)
        return name

    def _prepare_write(self, dim: int, fingerprint: str, *, unit: bool = True) -> str:
        index = self._resolve_write_index()
        if index is None:
            return self._create_index(self._manifest_for(dim, fingerprint, unit=unit))
        meta = self._index_meta(index)
        recorded = meta.get("model_fingerprint")
        if recorded and recorded != fingerprint:
            raise ModelMismatchError(
                f"index {index} was built with model {short_fingerprint(recorded)}, not "
                f"{short_fingerprint(fingerprint)}; rebuild it (blue/green, with --alias) to "
                "change models",
                expected=recorded,
                actual=fingerprint,
            )
        if meta.get("dim") not in (None, dim):
            raise ConfigurationError(
                f"index {index} holds {meta['dim']}-d vectors, these are {dim}-d"
            )
        return index

    def ensure_model(self, fingerprint: str) -> None:
        """During a rebuild the new generation may hold another model: that is its purpose.

        The generation being written is checked when it is (re)opened for writing instead.
        """
        if self._rebuild is None:
            super().ensure_model(fingerprint)

    def begin_rebuild(self, *, resume: bool = True, delete_old: bool = False) -> str | None:
        """Send the following writes to a new generation; `finalize()` moves the alias to it.

        With `resume`, an unaliased generation left by a failed rebuild is reused, so only
        the documents it lacks need sending. Returns the index name once known.
        """
        if not self.alias:
            raise ConfigurationError("a blue/green rebuild needs an alias (--alias)")
        with self._errors(f"inspect {self.alias}"):
            alias_is_index = not self.client.indices.exists_alias(
                name=self.alias
            ) and self.client.indices.exists(index=self.alias)
        old = [self.alias] if alias_is_index else self._concrete_indices(self.alias)
        if alias_is_index and not delete_old:
            raise StoreError(
                f"{self.alias} is a concrete index; turning it into an alias replaces it: "
                "rebuild with delete_old (--delete-old)"
            )
        self._rebuild = _Rebuild(
            old_indices=old, delete_old=delete_old, alias_is_index=alias_is_index
        )
        self._write_index = None
        self._created = None
        if resume:
            self._write_index = self._created = self._unfinished_build(after=old)
        if self._write_index is None and self.manifest is not None:
            self._create_index(self.manifest)
        return self._write_index

    def _prepare_rebuild_write(self, dim: int, fingerprint: str, *, unit: bool = True) -> str:
        if self._write_index is not None:
            meta = self._index_meta(self._write_index)
            if meta.get("model_fingerprint") not in (None, fingerprint) or meta.get("dim") != dim:
                logger.warning(
                    "the unfinished rebuild %s holds another model; starting a new generation",
                    self._write_index,
                )
                self._write_index = None
        if self._write_index is None:
            return self._create_index(self._manifest_for(dim, fingerprint, unit=unit))
        return self._write_index

    def finalize(self) -> None:
        """Refresh; a newly built index gets its live settings and then the alias."""
        if self._created is not None:
            created = self._created
            with self._errors(f"make {created} live"):
                self.client.indices.put_settings(
                    index=created, body=assets.live_settings(self.index_options)
                )
                self.client.indices.refresh(index=created)
            if self.alias:
                self._switch_alias(created)
            self._created = None
            self._read_state = None
        elif self._write_index is not None:
            with self._errors(f"refresh {self._write_index}"):
                self.client.indices.refresh(index=self._write_index)

    def _switch_alias(self, new_index: str) -> None:
        rebuild = self._rebuild or _Rebuild(
            old_indices=[i for i in self._concrete_indices(self.alias or "") if i != new_index],
            delete_old=False,
            alias_is_index=False,
        )
        old = [i for i in rebuild.old_indices if i != new_index]
        actions: list[dict[str, Any]] = [{"add": {"index": new_index, "alias": self.alias}}]
        if rebuild.alias_is_index:
            actions.append({"remove_index": {"index": self.alias}})
        else:
            actions += [{"remove": {"index": name, "alias": self.alias}} for name in old]
        with self._errors(f"move the alias {self.alias} to {new_index}"):
            self.client.indices.update_aliases(body={"actions": actions})
        logger.info("alias %s now points to %s", self.alias, new_index)
        if rebuild.delete_old and not rebuild.alias_is_index and old:
            with self._errors(f"delete {', '.join(old)}"):
                self.client.indices.delete(index=",".join(old))
        self._rebuild = None
        self._write_index = new_index

    # -- writes -----------------------------------------------------------------------------

    def upsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        *,
        model_fingerprint: str,
        precomputed: np.ndarray | None = None,
    ) -> None:
        """Index documents with their vectors; partial failures raise BulkIndexError at the end.

        Not atomic: documents that succeeded stay. Ids are `_id`s, so resending is harmless.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        n = len(documents)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise InputError(f"expected vectors of shape ({n}, dim), got {vectors.shape}")
        if precomputed is not None:
            precomputed = np.asarray(precomputed, dtype=np.float32)
            if precomputed.ndim != 2 or precomputed.shape[0] != n:
                raise InputError(f"expected precomputed of shape ({n}, h), got {precomputed.shape}")
        if n == 0:
            return
        bad = ~np.isfinite(vectors).all(axis=1)
        if precomputed is not None:
            bad |= ~np.isfinite(precomputed).all(axis=1)
        if bad.any():
            raise InputError("vector is not finite", record_id=documents[int(np.argmax(bad))].id)
        dim = int(vectors.shape[1])
        # without a manifest, the vectors say whether the index may insist on unit length
        squared = np.einsum("ij,ij->i", vectors, vectors)
        unit = bool(np.all(np.abs(squared - 1.0) <= assets.SQUARED_NORM_TOLERANCE))
        index = (
            self._prepare_rebuild_write(dim, model_fingerprint, unit=unit)
            if self._rebuild
            else self._prepare_write(dim, model_fingerprint, unit=unit)
        )
        actions = [
            self._index_action(
                index,
                doc,
                {
                    assets.FIELD_VECTOR: assets.vector_to_list(vectors[i]),
                    **(
                        {}
                        if precomputed is None
                        else {assets.FIELD_PRECOMPUTED: assets.encode_floats(precomputed[i])}
                    ),
                },
            )
            for i, doc in enumerate(documents)
        ]
        pipeline = self.names.vector_pipeline if self.bulk.use_pipeline else None
        self._run_bulk(actions, pipeline=pipeline)

    def index_texts(
        self, documents: Sequence[Document], *, model_fingerprint: str, model_id: str
    ) -> None:
        """Index documents encoded in the cluster (`--encode-in-cluster`): ingest pipeline (b).

        The cluster computes the vectors with the registered ML Commons model; there is no
        precomputed crossing data, so the rerank computes that half per candidate.
        """
        if not documents:
            return
        if self.manifest is None:
            raise ConfigurationError("encoding in the cluster needs the model manifest")
        dim = self.manifest.dim
        index = (
            self._prepare_rebuild_write(dim, model_fingerprint)
            if self._rebuild
            else self._prepare_write(dim, model_fingerprint)
        )
        if self._embed_pipeline_for != model_id:  # once per store, not per batch
            self.put_assets(self._manifest_for(dim, model_fingerprint), model_id=model_id)
            self._embed_pipeline_for = model_id
        actions = [
            self._index_action(index, doc, {assets.FIELD_ENCODING_TEXT: doc.encoding_text})
            for doc in documents
        ]
        self._run_bulk(actions, pipeline=self.names.embed_pipeline)

    @staticmethod
    def _index_action(index: str, doc: Document, extra: dict[str, Any]) -> dict[str, Any]:
        if not doc.id or len(doc.id.encode("utf-8")) > MAX_ID_BYTES:
            raise InputError(
                f"document ids must be 1 to {MAX_ID_BYTES} bytes (an OpenSearch _id)",
                record_id=doc.id[:80],
            )
        source = {
            assets.FIELD_ID: doc.id,
            assets.FIELD_TITLE: doc.title,
            assets.FIELD_TEXT: doc.text,
            assets.FIELD_METADATA: doc.metadata,
            assets.FIELD_HASH: doc.content_hash,
            **extra,
        }
        return {"_op_type": "index", "_index": index, "_id": doc.id, "_source": source}

    def _run_bulk(self, actions: list[dict[str, Any]], *, pipeline: str | None) -> int:
        """Send actions; resend 429/5xx failures with backoff; raise once for the rest."""
        from opensearchpy.helpers import streaming_bulk

        by_id = {a["_id"]: a for a in actions}
        pending = actions
        errors: list[dict[str, Any]] = []
        succeeded = 0
        attempt = 0
        params = {"pipeline": pipeline} if pipeline else None
        while pending:
            retry: list[dict[str, Any]] = []
            outcomes = streaming_bulk(
                self.client,
                pending,
                chunk_size=self.bulk.chunk_size,
                max_chunk_bytes=self.bulk.max_chunk_bytes,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=0,  # retries happen here, for 5xx as well as 429
                yield_ok=True,
                params=params,
            )
            for ok, item in outcomes:
                op_type, info = next(iter(item.items()))
                if ok:
                    succeeded += 1
                    continue
                status = info.get("status")
                retryable = not isinstance(status, int) or status in RETRY_STATUSES
                if retryable and attempt < self.bulk.max_retries:
                    retry.append(by_id[info["_id"]])
                else:
                    errors.append(_item_error(op_type, info, attempt + 1))
            if retry:
                attempt += 1
                delay = self.bulk.backoff(attempt)
                logger.warning(
                    "bulk: %d documents rejected (429/5xx); retry %d/%d in %.1fs",
                    len(retry),
                    attempt,
                    self.bulk.max_retries,
                    delay,
                )
                self._sleep(delay)
            pending = retry
        if errors:
            if all(not isinstance(e["status"], int) for e in errors):
                raise BackendUnavailableError(
                    f"bulk indexing: cannot reach OpenSearch at {self._safe_url} "
                    f"({len(errors)} documents not sent)"
                )
            first = errors[0]
            raise BulkIndexError(
                f"{len(errors)} of {len(actions)} documents failed to index "
                f"(first: {first['id']}: {first['type']}: {first['reason']})",
                errors,
            )
        return succeeded

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        index = self._resolve_write_index()
        if not ids or index is None:
            return 0
        from opensearchpy.helpers import streaming_bulk

        deleted = 0
        failures: list[dict[str, Any]] = []
        actions = ({"_op_type": "delete", "_index": index, "_id": i} for i in ids)
        with self._errors(f"delete from {index}"):
            for ok, item in streaming_bulk(
                self.client,
                actions,
                chunk_size=self.bulk.chunk_size,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=self.bulk.max_retries,
                initial_backoff=self.bulk.initial_backoff,
                max_backoff=self.bulk.max_backoff,
            ):
                info = item["delete"]
                if ok and info.get("result") == "deleted":
                    deleted += 1
                elif not ok and info.get("status") != 404:
                    failures.append(_item_error("delete", info, 1))
        if failures:
            raise BulkIndexError(f"{len(failures)} deletions failed", failures)
        return deleted

    # -- reads ------------------------------------------------------------------------------

    def _search(self, body: dict[str, Any], what: str, **params: Any) -> dict[str, Any]:
        from opensearchpy.exceptions import NotFoundError

        try:
            with self._errors(what):
                return self.client.search(index=self.read_target, body=body, params=params or None)
        except StoreError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                self._read_state = None
                raise StoreError(
                    f"{what}: {self.read_target} does not exist at {self._safe_url}"
                ) from exc
            raise

    def _candidates(self, hits: list[dict[str, Any]], dim: int, space: str) -> Candidates:
        hits = sorted(hits, key=lambda h: (-float(h["_score"]), h["_id"]))
        ids = [h["_id"] for h in hits]
        vectors = np.zeros((len(hits), dim), dtype=np.float32)
        pre: list[np.ndarray | None] = []
        documents = []
        for i, hit in enumerate(hits):
            source = hit.get("_source") or {}
            vector = source.get(assets.FIELD_VECTOR)
            if vector is None or len(vector) != dim:
                raise StoreError(f"document {hit['_id']} has no stored {dim}-d vector")
            vectors[i] = vector
            encoded = source.get(assets.FIELD_PRECOMPUTED)
            pre.append(None if encoded is None else assets.decode_floats(encoded))
            documents.append(
                {
                    "title": source.get(assets.FIELD_TITLE, ""),
                    "text": source.get(assets.FIELD_TEXT, ""),
                    "metadata": source.get(assets.FIELD_METADATA) or {},
                }
            )
        precomputed = None
        if pre and all(p is not None for p in pre):
            precomputed = np.stack(pre).astype(np.float32)
        elif any(p is not None for p in pre):
            missing = next(ids[i] for i, p in enumerate(pre) if p is None)
            raise StoreError(f"document {missing} lacks the precomputed data its neighbours have")
        scores = np.array([float(h["_score"]) for h in hits], dtype=np.float32)
        return Candidates(
            ids=ids,
            recall_scores=assets.score_to_similarity(space, scores) if space else scores,
            vectors=vectors,
            precomputed=precomputed,
            documents=documents,
        )

    def _read_dim_space(self) -> tuple[int, str]:
        """Dimension and space type behind the read target, cached for `read_cache_seconds`.

        The cache saves the per-query alias lookups; its expiry lets a long-running server
        follow a blue/green switch.
        """
        now = time.monotonic()
        if self._read_state is None or now - self._read_state[0] > self.read_cache_seconds:
            indices = self._concrete_indices(self.read_target)
            if not indices:
                raise StoreError(
                    f"{self.read_target} does not exist at {self._safe_url}; index documents first"
                )
            meta = self._index_meta(indices[0])
            if meta.get("dim") is None:
                raise StoreError(f"{indices[0]} has no {assets.FIELD_VECTOR} field")
            self._read_state = (now, int(meta["dim"]), self._space_type(indices[0]))
        return self._read_state[1], self._read_state[2]

    def recall(
        self, query_vector: np.ndarray, n: int, *, filters: Filters | None = None
    ) -> Candidates:
        """kNN recall; scores are converted back to the cosine of the unit vectors."""
        dim, space = self._read_dim_space()
        query_vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if query_vector.shape[0] != dim:
            raise InputError(f"query vector has {query_vector.shape[0]} values, the index {dim}")
        if n <= 0:
            return Candidates.empty(dim)
        body = assets.knn_search_body(query_vector, n, filters=filters, ef_search=self.ef_search)
        response = self._search(body, "kNN recall")
        return self._candidates(response["hits"]["hits"], dim, space)

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        response = self._search(assets.bm25_search_body(query, n, filters=filters), "BM25 recall")
        hits = response["hits"]["hits"]
        return sorted(((h["_id"], float(h["_score"])) for h in hits), key=lambda x: (-x[1], x[0]))

    def bm25_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of these ids in one search (0 where the query matches nothing)."""
        out = np.zeros(len(ids), np.float32)
        if not ids:
            return out
        body = assets.bm25_scores_body(query, list(dict.fromkeys(ids)))
        hits = self._search(body, "BM25 scores")["hits"]["hits"]
        score = {h["_id"]: float(h["_score"]) for h in hits}
        for i, doc_id in enumerate(ids):
            out[i] = score.get(doc_id, 0.0)
        return out

    def recall_hybrid(
        self,
        query: str,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
    ) -> Candidates:
        """BM25 and kNN in one `hybrid` query; recall scores are the pipeline's combined scores."""
        dim, _ = self._read_dim_space()
        if n <= 0:
            return Candidates.empty(dim)
        body = assets.hybrid_search_body(
            query,
            np.asarray(query_vector, dtype=np.float32),
            n,
            filters=filters,
            ef_search=self.ef_search,
        )
        response = self._search(body, "hybrid recall", search_pipeline=self.names.hybrid_pipeline)
        return self._candidates(response["hits"]["hits"], dim, "")

    def _mget(self, index: str, ids: list[str], source: Any) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for start in range(0, len(ids), MGET_BATCH):
            batch = ids[start : start + MGET_BATCH]
            with self._errors(f"fetch documents from {index}"):
                response = self.client.mget(
                    index=index, body={"ids": batch}, params={"_source_includes": source}
                )
            docs.extend(response["docs"])
        return docs

    def fetch(self, ids: Sequence[str]) -> Candidates:
        dim, _ = self._read_dim_space()
        ids = list(ids)
        if not ids:
            return Candidates.empty(dim)
        docs = self._mget(
            self.read_target, list(dict.fromkeys(ids)), ",".join(assets.SOURCE_FIELDS)
        )
        found = {d["_id"]: d for d in docs if d.get("found")}
        missing = [i for i in ids if i not in found]
        if missing:
            raise StoreError(f"{len(missing)} unknown document ids, e.g. {missing[:5]}")
        hits = [{"_id": i, "_score": 0.0, "_source": d["_source"]} for i, d in found.items()]
        fetched = self._candidates(hits, dim, "")
        fetched.recall_scores = np.zeros(len(fetched), dtype=np.float32)
        position = {doc_id: pos for pos, doc_id in enumerate(fetched.ids)}
        return fetched.take([position[i] for i in ids])

    def content_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """Hashes recorded where writes go (the new generation during a rebuild)."""
        ids = list(dict.fromkeys(ids))
        index = self._write_index if self._rebuild else self._resolve_write_index()
        if not ids or index is None:
            return {}
        docs = self._mget(index, ids, assets.FIELD_HASH)
        return {
            d["_id"]: d["_source"][assets.FIELD_HASH]
            for d in docs
            if d.get("found") and assets.FIELD_HASH in (d.get("_source") or {})
        }

    def all_ids(self) -> list[str]:
        """Every id, paged with search_after on `doc_id` (sees refreshed documents)."""
        index = self._write_index if self._rebuild else self.read_target
        if not index or not self._concrete_indices(index):
            return []
        ids: list[str] = []
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": SCAN_PAGE,
                "query": {"match_all": {}},
                # a bare field name sorts ascending (the spec's oneOf rejects {field: "asc"})
                "sort": [assets.FIELD_ID],
                "_source": False,
            }
            if after is not None:
                body["search_after"] = after
            with self._errors(f"list the ids in {index}"):
                hits = self.client.search(index=index, body=body)["hits"]["hits"]
            ids.extend(h["_id"] for h in hits)
            if len(hits) < SCAN_PAGE:
                return ids
            after = hits[-1]["sort"]

    @property
    def info(self) -> StoreInfo:
        indices = self._concrete_indices(self.read_target)
        if not indices:
            return StoreInfo(
                backend="opensearch",
                model_fingerprint=None,
                dim=None,
                count=0,
                ann=self.index_options.describe(),
                extra={"url": self._safe_url, "alias": self.alias, "indices": []},
            )
        meta = self._index_meta(indices[0])
        with self._errors(f"count {self.read_target}"):
            count = int(self.client.count(index=self.read_target)["count"])
        return StoreInfo(
            backend="opensearch",
            model_fingerprint=meta.get("model_fingerprint"),
            dim=meta.get("dim"),
            count=count,
            codec="float32",
            ann=meta.get("ann"),
            extra={"url": self._safe_url, "alias": self.alias, "indices": indices},
        )

    def status(self) -> dict[str, Any]:
        """What `twinbert-search opensearch status` prints: cluster, index, assets."""
        with self._errors("read the cluster status"):
            health = self.client.cluster.health()
            about = self.client.info()
            template = self.client.indices.exists_index_template(name=self.names.template)
            pipelines = self.client.ingest.get_pipeline(
                id=f"{self.names.vector_pipeline},{self.names.embed_pipeline}", ignore=404
            )
            search_pipeline = self.client.search_pipeline.get(
                id=self.names.hybrid_pipeline, ignore=404
            )
        info = self.info
        return {
            "url": self._safe_url,
            "cluster": {
                "name": health.get("cluster_name"),
                "status": health.get("status"),
                "nodes": health.get("number_of_nodes"),
                "version": about.get("version", {}).get("number"),
            },
            "target": self.read_target,
            "indices": info.extra.get("indices", []),
            "count": info.count,
            "model_fingerprint": info.model_fingerprint,
            "dim": info.dim,
            "ann": info.ann,
            "template": self.names.template if template else None,
            "ingest_pipelines": sorted(k for k in pipelines if not k.startswith("error")),
            "search_pipelines": sorted(
                k for k in search_pipeline if k == self.names.hybrid_pipeline
            ),
        }

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def _item_error(op_type: str, info: Mapping[str, Any], attempts: int) -> dict[str, Any]:
    """One failed document, without its source (vectors are large, texts may be private)."""
    error = info.get("error")
    if isinstance(error, Mapping):
        kind, reason = error.get("type", "error"), str(error.get("reason", ""))
    else:
        kind, reason = "request_failed", str(error or "")
    return {
        "id": info.get("_id"),
        "index": info.get("_index"),
        "op": op_type,
        "status": info.get("status"),
        "type": kind,
        "reason": reason[:500],
        "attempts": attempts,
    }
