"""Upload the TwinBERT document encoder to ML Commons, so the cluster can encode documents.

ML Commons runs a local ONNX text-embedding model from a zip holding exactly one `.onnx` file
and `tokenizer.json` at its root, registered with its sha256, size and a `model_config`
(`model_type`, `embedding_dimension`, `framework_type`, `pooling_mode`, `normalize_result`).
Its ONNX translator (ONNXSentenceTransformerTextEmbeddingTranslator) feeds `input_ids`,
`attention_mask` and, for model_type `bert`, `token_type_ids`; it takes the graph's first
output as token embeddings, pools them and optionally normalises.

Our document encoder already pools and normalises (`embedding` [batch, dim]). So the packaged
graph adds one step: the first output, `token_embeddings`, repeats the sentence vector at every
token position, which `cls` pooling (position 0) returns unchanged; a second output,
`sentence_embedding`, serves ML Commons versions that read it directly. In-cluster vectors then
equal the sidecar's exactly, truncation included (the packaged tokenizer.json truncates at the
manifest's `max_doc_length`).

Registration uploads the zip in chunks (`_register_meta` then `upload_chunk`), which needs
`plugins.ml_commons.allow_registering_model_via_local_file: true`; with a URL the cluster
downloads the same zip instead (`_register` with `url`, needs
`plugins.ml_commons.allow_registering_model_via_url: true`). The zip is byte-for-byte
reproducible, so registering twice finds the first model by its hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinbert_search import __version__
from twinbert_search.errors import BackendUnavailableError, ModelError, StoreError
from twinbert_search.manifest import ModelManifest

logger = logging.getLogger(__name__)

CHUNK_SIZE = 10_000_000  # what opensearch-py-ml uses; ML Commons stores each chunk as a doc
MODEL_TYPE = "bert"  # makes ML Commons feed token_type_ids, which our encoder takes
FRAMEWORK_TYPE = "sentence_transformers"
POOLING_MODE = "cls"  # position 0 of `token_embeddings` is the sentence vector
TOKEN_OUTPUT = "token_embeddings"
SENTENCE_OUTPUT = "sentence_embedding"
ENCODER_OUTPUT = "embedding"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
TERMINAL_FAILED = {"FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"}
REUSABLE_STATES = {
    "REGISTERED", "DEPLOYING", "DEPLOYED", "PARTIALLY_DEPLOYED", "UNDEPLOYED", "DEPLOY_FAILED",
}  # fmt: skip


@dataclass(frozen=True)
class ModelPackage:
    """A model zip ready for ML Commons, with the metadata its registration sends."""

    path: Path
    name: str
    version: str
    description: str
    sha256: str
    size_in_bytes: int
    dim: int
    vector_fingerprint: str  # what the index records for vectors this model computes
    model_config: dict[str, Any] = field(default_factory=dict)

    def total_chunks(self, chunk_size: int = CHUNK_SIZE) -> int:
        return max(1, math.ceil(self.size_in_bytes / chunk_size))

    def register_meta_body(
        self, *, chunk_size: int = CHUNK_SIZE, model_group_id: str | None = None
    ) -> dict[str, Any]:
        """POST /_plugins/_ml/models/_register_meta (then upload_chunk per chunk)."""
        body: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "function_name": "TEXT_EMBEDDING",
            "model_format": "ONNX",
            "model_content_hash_value": self.sha256,
            "model_content_size_in_bytes": self.size_in_bytes,
            "total_chunks": self.total_chunks(chunk_size),
            "model_config": self.model_config,
        }
        if model_group_id:
            body["model_group_id"] = model_group_id
        return body

    def register_url_body(self, url: str, *, model_group_id: str | None = None) -> dict[str, Any]:
        """POST /_plugins/_ml/models/_register: the cluster downloads this zip from `url`."""
        body: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "function_name": "TEXT_EMBEDDING",
            "model_format": "ONNX",
            "model_content_hash_value": self.sha256,
            "model_config": self.model_config,
            "url": url,
        }
        if model_group_id:
            body["model_group_id"] = model_group_id
        return body

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk


def ml_model_config(manifest: ModelManifest, quantized: bool = False) -> dict[str, Any]:
    """The `model_config` ML Commons needs to run the packaged encoder; `all_config` records
    the fingerprint of the vectors it computes, by which `find_model_of` finds it again."""
    all_config = {
        "twinbert_search": {
            "model_fingerprint": manifest.fingerprint or None,
            "vector_fingerprint": vector_fingerprint(manifest, quantized),
            "dim": manifest.dim,
            "pooling": manifest.pooling,
            "max_doc_length": manifest.max_doc_length,
            "base_model": manifest.base_model,
            "packaging": "document encoder; token_embeddings repeats the pooled vector",
        }
    }
    return {
        "model_type": MODEL_TYPE,
        "embedding_dimension": manifest.dim,
        "framework_type": FRAMEWORK_TYPE,
        "pooling_mode": POOLING_MODE,
        "normalize_result": bool(manifest.normalize),
        "model_max_length": manifest.max_doc_length,
        "all_config": json.dumps(all_config, sort_keys=True),
    }


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a declared dependency
        raise ModelError(
            "packaging a model for ML Commons needs the `onnx` package: pip install onnx"
        ) from exc
    return onnx


def adapt_for_ml_commons(source: bytes | Path, dim: int) -> bytes:
    """Add `token_embeddings` [batch, seq, dim] (the sentence vector at every position).

    A path is loaded with its external weights, if any, so the result is one self-contained
    graph (ML Commons loads exactly one file).
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper

    model = onnx.load(str(source)) if isinstance(source, Path) else onnx.load_from_string(source)
    graph = model.graph
    inputs = {i.name for i in graph.input}
    missing = {"input_ids", "attention_mask", "token_type_ids"} - inputs
    if missing:
        raise ModelError(f"the document encoder lacks inputs {sorted(missing)}")
    outputs = [o.name for o in graph.output]
    if ENCODER_OUTPUT not in outputs:
        raise ModelError(f"the document encoder has no {ENCODER_OUTPUT!r} output (has {outputs})")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    nodes = []
    if opset >= 13:
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                ["tb_axis1"],
                value=helper.make_tensor("tb_axis1_value", TensorProto.INT64, [1], [1]),
            )
        )
        nodes.append(helper.make_node("Unsqueeze", [ENCODER_OUTPUT, "tb_axis1"], ["tb_unsqueezed"]))
    else:
        nodes.append(helper.make_node("Unsqueeze", [ENCODER_OUTPUT], ["tb_unsqueezed"], axes=[1]))
    nodes += [
        helper.make_node("Shape", ["input_ids"], ["tb_batch_seq"]),
        helper.make_node(
            "Constant",
            [],
            ["tb_dim"],
            value=helper.make_tensor("tb_dim_value", TensorProto.INT64, [1], [dim]),
        ),
        helper.make_node("Concat", ["tb_batch_seq", "tb_dim"], ["tb_target_shape"], axis=0),
        helper.make_node("Expand", ["tb_unsqueezed", "tb_target_shape"], [TOKEN_OUTPUT]),
        helper.make_node("Identity", [ENCODER_OUTPUT], [SENTENCE_OUTPUT]),
    ]
    graph.node.extend(nodes)
    kept = [o for o in graph.output if o.name != ENCODER_OUTPUT]
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(TOKEN_OUTPUT, TensorProto.FLOAT, ["batch", "seq", dim]),
            helper.make_tensor_value_info(SENTENCE_OUTPUT, TensorProto.FLOAT, ["batch", dim]),
            *kept,
        ]
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ml_tokenizer_json(tokenizer_path: Path, max_length: int) -> str:
    """tokenizer.json truncating at the document length, without padding (ML Commons pads)."""
    from tokenizers import Tokenizer

    if not tokenizer_path.is_file():
        raise ModelError(f"tokenizer not found: {tokenizer_path}", path=str(tokenizer_path))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer.to_str()


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def vector_fingerprint(manifest: ModelManifest, quantized: bool = False) -> str:
    """The fingerprint of the vectors a graph computes (as TwinBertRuntime.fingerprint)."""
    vectors = manifest.document_fingerprint or manifest.fingerprint
    return f"{vectors}{':int8' if quantized else ''}"


def default_model_name(manifest: ModelManifest, quantized: bool = False) -> str:
    suffix = (manifest.fingerprint or "unversioned")[:12]
    return f"twinbert-document-encoder-{suffix}{'-int8' if quantized else ''}"


def build_model_package(
    model_dir: str | Path,
    out_path: str | Path | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    quantized: bool = False,
) -> ModelPackage:
    """Write the ML Commons zip for a model directory; deterministic bytes, so a stable hash."""
    model_dir = Path(model_dir)
    manifest = ModelManifest.load(model_dir)
    if manifest.document_prefix:
        # ML Commons tokenises the field's text as it is: the vectors would lack the prefix
        # the tower was trained with (e5's "passage: "), and recall would quietly degrade.
        raise ModelError(
            f"{model_dir}: this model encodes documents with the prefix "
            f"{manifest.document_prefix!r}, which ML Commons cannot add; index it without "
            "--encode-in-cluster (the documents are encoded here and their vectors sent)",
            path=str(model_dir),
        )
    key = "document_encoder_int8" if quantized else "document_encoder"
    default = "onnx/document_encoder.int8.onnx" if quantized else "onnx/document_encoder.onnx"
    onnx_path = model_dir / manifest.onnx.get(key, default)
    if not onnx_path.is_file():
        raise ModelError(
            f"{onnx_path} not found: export the model to ONNX first", path=str(onnx_path)
        )
    name = name or default_model_name(manifest, quantized)
    model_bytes = adapt_for_ml_commons(onnx_path, manifest.dim)
    tokenizer = ml_tokenizer_json(model_dir / "tokenizer.json", manifest.max_doc_length)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _zip_entry(archive, f"{name}.onnx", model_bytes)
        _zip_entry(archive, "tokenizer.json", tokenizer.encode("utf-8"))
    data = buffer.getvalue()
    out = Path(out_path) if out_path else model_dir / "onnx" / f"{name}.ml-commons.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    fingerprint = manifest.fingerprint[:12] if manifest.fingerprint else "unknown"
    return ModelPackage(
        path=out,
        name=name,
        version=version or __version__,
        description=(
            f"TwinBERT document encoder (model {fingerprint}{', int8' if quantized else ''}, "
            f"{manifest.dim}-d)"
        ),
        sha256=hashlib.sha256(data).hexdigest(),
        size_in_bytes=len(data),
        dim=manifest.dim,
        vector_fingerprint=vector_fingerprint(manifest, quantized),
        model_config=ml_model_config(manifest, quantized),
    )


def _ml(client: Any) -> Any:
    return client.plugins.ml


def find_model(client: Any, sha256: str) -> dict[str, Any] | None:
    """A registered model with this zip hash (its `model_id` and `model_state`), if any."""
    body = {
        "query": {
            "bool": {
                "filter": [{"term": {"model_content_hash_value": sha256}}],
                "must_not": [{"exists": {"field": "chunk_number"}}],
            }
        },
        "size": 10,
    }
    response = _ml(client).search_models(body=body)
    for hit in response.get("hits", {}).get("hits", []):
        source = hit.get("_source", {})
        if source.get("model_state") not in REUSABLE_STATES:  # e.g. an upload cut short
            continue
        return {
            "model_id": source.get("model_id", hit["_id"]),
            "model_state": source.get("model_state"),
        }
    return None


SERVING_STATES = ("DEPLOYED", "PARTIALLY_DEPLOYED")


def _computes(source: dict[str, Any], manifest: ModelManifest, quantized: bool) -> bool:
    """Whether a registered model (its `_source`) computes this model's document vectors.

    `all_config` names the vectors' fingerprint; registrations older than that field name the
    model's fingerprint, and the int8 encoder by its default name's `-int8`.
    """
    config = source.get("model_config") or {}
    try:
        ours = json.loads(config.get("all_config") or "{}").get("twinbert_search") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    if "vector_fingerprint" in ours:
        return bool(ours["vector_fingerprint"] == vector_fingerprint(manifest, quantized))
    is_int8 = str(source.get("name", "")).endswith("-int8")
    fingerprint = ours.get("model_fingerprint")
    same_model = bool(manifest.fingerprint) and fingerprint == manifest.fingerprint
    return same_model and is_int8 == quantized


def find_model_of(
    client: Any, manifest: ModelManifest, quantized: bool = False
) -> dict[str, Any] | None:
    """The registered model that encodes documents as `manifest`'s model does (its `model_id`,
    `model_state` and `name`), found by fingerprint; a deployed one first. None when no model
    registered by `register-model` computes these vectors."""
    body = {
        "query": {"bool": {"must_not": [{"exists": {"field": "chunk_number"}}]}},
        "size": 1000,
    }
    response = _ml(client).search_models(body=body)
    found = []
    for hit in response.get("hits", {}).get("hits", []):
        source = hit.get("_source", {})
        if source.get("model_state") in REUSABLE_STATES and _computes(source, manifest, quantized):
            found.append(
                {
                    "model_id": source.get("model_id", hit["_id"]),
                    "model_state": source.get("model_state"),
                    "name": source.get("name"),
                }
            )
    for model in found:  # a search lags the model's state by a refresh; a get does not
        if model["model_state"] not in SERVING_STATES:
            model["model_state"] = model_state(client, model["model_id"])
    found.sort(key=lambda m: (m["model_state"] not in SERVING_STATES, str(m["model_id"])))
    return found[0] if found else None


def wait_for_task(
    client: Any,
    task_id: str,
    *,
    timeout: float = 600.0,
    poll_interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll an ML task until it completes; raises StoreError when it fails."""
    deadline = time.monotonic() + timeout
    while True:
        task = _ml(client).get_task(task_id=task_id)
        state = task.get("state")
        if state == "COMPLETED":
            return task
        if state in TERMINAL_FAILED:
            raise StoreError(
                f"ML Commons task {task_id} ({task.get('task_type', 'task')}) ended {state}: "
                f"{task.get('error', 'no error message')}"
            )
        if time.monotonic() >= deadline:
            raise BackendUnavailableError(
                f"ML Commons task {task_id} still {state} after {timeout:.0f}s"
            )
        sleep(poll_interval)


def register_model(
    client: Any,
    package: ModelPackage,
    *,
    url: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    model_group_id: str | None = None,
    timeout: float = 600.0,
    poll_interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Register the package (chunks, or by URL); returns the model id once REGISTERED."""
    if url:
        response = _ml(client).register_model(
            body=package.register_url_body(url, model_group_id=model_group_id)
        )
        if "model_id" in response:
            return str(response["model_id"])
        task = wait_for_task(
            client, response["task_id"], timeout=timeout, poll_interval=poll_interval, sleep=sleep
        )
        return str(task["model_id"])
    response = _ml(client).register_model_meta(
        body=package.register_meta_body(chunk_size=chunk_size, model_group_id=model_group_id)
    )
    model_id = response.get("model_id")
    if not model_id:
        raise StoreError(f"ML Commons did not create the model: {response}")
    total = package.total_chunks(chunk_size)
    for number, chunk in enumerate(package.chunks(chunk_size)):
        logger.info("uploading model chunk %d/%d (%d bytes)", number + 1, total, len(chunk))
        _ml(client).upload_chunk(model_id=model_id, chunk_number=number, body=chunk)
    return str(model_id)


def deploy_model(
    client: Any,
    model_id: str,
    *,
    timeout: float = 600.0,
    poll_interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Deploy (load on the ML nodes) and wait until the model serves."""
    response = _ml(client).deploy_model(model_id=model_id)
    if response.get("status") == "COMPLETED":
        return
    wait_for_task(
        client, response["task_id"], timeout=timeout, poll_interval=poll_interval, sleep=sleep
    )


def model_state(client: Any, model_id: str) -> str:
    return str(_ml(client).get_model(model_id=model_id).get("model_state", "UNKNOWN"))


def wait_for_state(
    client: Any,
    model_id: str,
    wanted: str,
    *,
    timeout: float = 60.0,
    poll_interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The model's state once it reads `wanted`, else the last one read at the deadline.

    ML Commons completes the deploy task before it updates the model's own record, so a read
    right after the task can still say DEPLOYING."""
    deadline = time.monotonic() + timeout
    while True:
        state = model_state(client, model_id)
        if state == wanted or time.monotonic() >= deadline:
            return state
        sleep(poll_interval)


@dataclass(frozen=True)
class RegisteredModel:
    model_id: str
    state: str
    reused: bool


def register_and_deploy(
    client: Any,
    package: ModelPackage,
    *,
    url: str | None = None,
    deploy: bool = True,
    reuse: bool = True,
    chunk_size: int = CHUNK_SIZE,
    model_group_id: str | None = None,
    timeout: float = 600.0,
    poll_interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> RegisteredModel:
    """Register unless a model with the same zip hash exists, then deploy unless deployed."""
    found = find_model(client, package.sha256) if reuse else None
    if found:
        model_id, reused = found["model_id"], True
        logger.info("model %s with this zip hash is already registered", model_id)
    else:
        model_id = register_model(
            client,
            package,
            url=url,
            chunk_size=chunk_size,
            model_group_id=model_group_id,
            timeout=timeout,
            poll_interval=poll_interval,
            sleep=sleep,
        )
        reused = False
    state = model_state(client, model_id)
    if deploy and state != "DEPLOYED":
        deploy_model(client, model_id, timeout=timeout, poll_interval=poll_interval, sleep=sleep)
        state = wait_for_state(
            client,
            model_id,
            "DEPLOYED",
            timeout=min(timeout, 60.0),
            poll_interval=poll_interval,
            sleep=sleep,
        )
    return RegisteredModel(model_id=model_id, state=state, reused=reused)
