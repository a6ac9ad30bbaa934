"""ML Commons in the fake: model registration (chunks or URL), deploy, tasks, model search.

Deployed models really run: `FakeMLEmbedder` loads the registered zip with onnxruntime and
encodes as ML Commons' ONNX text-embedding translator does, so in-cluster vectors can be
compared with the sidecar's.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.fake_cluster_common import FakeIndex, FakeUnsupported
from tests.fake_opensearch.common import ApiError


class FakeMLEmbedder:
    """A deployed model, run as ML Commons' ONNXSentenceTransformerTextEmbeddingTranslator does.

    One sentence per call; input_ids and attention_mask, plus token_type_ids for bert/albert;
    the first output (a 3-d output loses its batch axis) is pooled per `pooling_mode`, then
    L2-normalised when `normalize_result`.
    """

    def __init__(self, zip_bytes: bytes, model_config: Mapping[str, Any]) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            names = archive.namelist()
            models = [n for n in names if n.endswith((".onnx", ".pt"))]
            if len(models) != 1:
                raise ValueError(f"expected exactly one model file in the zip, found {models}")
            if "/" in models[0]:
                raise ValueError("the model file must be at the root of the zip")
            if "tokenizer.json" not in names:
                raise ValueError("Can't find tokenizer file")
            model_bytes = archive.read(models[0])
            self.tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode("utf-8"))
        self.session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        self.config = dict(model_config)

    def embed(self, text: str) -> list[float]:
        enc = self.tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        }
        if str(self.config.get("model_type", "")).lower() in ("bert", "albert"):
            feeds["token_type_ids"] = np.array([enc.type_ids], dtype=np.int64)
        outputs = self.session.run(None, feeds)
        emb = np.asarray(outputs[0], dtype=np.float32)
        if emb.ndim == 3:
            emb = emb[0]
        mask = np.asarray(enc.attention_mask, dtype=np.float32)
        pooling = str(self.config.get("pooling_mode", "mean")).lower()
        if pooling == "none" and len(outputs) > 1:
            vec = np.asarray(outputs[1], dtype=np.float32).reshape(-1)
        elif pooling == "cls":
            vec = emb[0]
        elif pooling in ("mean", "mean_sqrt_len"):
            total = (emb * mask[:, None]).sum(axis=0)
            count = max(mask.sum(), 1e-9)
            vec = total / (math.sqrt(count) if pooling == "mean_sqrt_len" else count)
        elif pooling == "max":
            vec = np.where(mask[:, None] > 0, emb, -1e9).max(axis=0)
        else:
            raise FakeUnsupported(f"pooling mode {pooling}")
        if self.config.get("normalize_result"):
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return np.asarray(vec, dtype=np.float32).tolist()


@dataclass
class FakeTask:
    task_id: str
    task_type: str
    model_id: str | None
    state: str
    error: str | None = None
    polls_left: int = 0


class MLApi:
    """The `_plugins/_ml` handlers of FakeCluster (state lives on the cluster).

    A mixin: `_next_id` is FakeCluster's, `_evaluate` (model search) is SearchApi's.
    """

    models: dict[str, dict[str, Any]]
    model_chunks: dict[str, dict[int, bytes]]
    embedders: dict[str, FakeMLEmbedder]
    tasks: dict[str, FakeTask]
    task_polls: int
    ml_allow_local_file: bool
    ml_allow_url: bool
    ml_url_content: dict[str, bytes]

    # -- ML Commons ---------------------------------------------------------------------------

    def _task(self, task_type: str, model_id: str | None, error: str | None = None) -> FakeTask:
        task = FakeTask(
            task_id=self._next_id("task-"),
            task_type=task_type,
            model_id=model_id,
            state="FAILED" if error else "COMPLETED",
            error=error,
            polls_left=self.task_polls,
        )
        self.tasks[task.task_id] = task
        return task

    def _new_model(self, body: Mapping[str, Any]) -> str:
        model_id = self._next_id("model-")
        self.models[model_id] = {
            "model_id": model_id,
            "name": body["name"],
            "model_version": body["version"],
            "model_format": body["model_format"],
            "model_config": body["model_config"],
            "model_content_hash_value": body["model_content_hash_value"],
            "model_content_size_in_bytes": body.get("model_content_size_in_bytes"),
            "total_chunks": body.get("total_chunks"),
            "model_state": "REGISTERING",
            "algorithm": "TEXT_EMBEDDING",
        }
        return model_id

    def _finish_registration(self, model_id: str, content: bytes) -> str | None:
        model = self.models[model_id]
        if hashlib.sha256(content).hexdigest() != model["model_content_hash_value"]:
            model["model_state"] = "REGISTER_FAILED"
            return "model content hash can't match original hash value"
        model["model_state"] = "REGISTERED"
        model["model_content_size_in_bytes"] = len(content)
        self.model_chunks[model_id] = {0: content}
        return None

    def _h_ml_register_model_meta(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        model_id = self._new_model(body)
        self.model_chunks[model_id] = {}
        return 200, {"model_id": model_id, "status": "CREATED"}

    def _h_ml_upload_chunk(self, pp: dict[str, str], params: Any, body: bytes) -> tuple[int, Any]:
        if not self.ml_allow_local_file:
            raise ApiError(
                400,
                "illegal_argument_exception",
                "To upload custom model from local file, user needs to enable "
                "allow_registering_model_via_local_file settings.",
            )
        model_id = pp["model_id"]
        if model_id not in self.models:
            raise ApiError(404, "status_exception", f"Failed to find model {model_id}")
        chunks = self.model_chunks[model_id]
        chunks[int(pp["chunk_number"])] = body
        total = self.models[model_id]["total_chunks"]
        if len(chunks) == total:
            content = b"".join(chunks[i] for i in range(total))
            self._finish_registration(model_id, content)
        return 200, {"status": "Uploaded"}

    def _h_ml_register_model(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        if not self.ml_allow_url:
            raise ApiError(
                400,
                "illegal_argument_exception",
                "To upload custom model user needs to enable "
                "allow_registering_model_via_url settings.",
            )
        model_id = self._new_model(body)
        content = self.ml_url_content.get(body["url"])
        error = (
            "cannot download the model"
            if content is None
            else self._finish_registration(model_id, content)
        )
        task = self._task("REGISTER_MODEL", model_id, error)
        return 200, {"task_id": task.task_id, "status": "CREATED"}

    def _h_ml_deploy_model(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        model_id = pp["model_id"]
        model = self.models.get(model_id)
        if model is None:
            raise ApiError(404, "status_exception", f"Failed to find model {model_id}")
        if model["model_state"] not in ("REGISTERED", "DEPLOYED", "DEPLOY_FAILED"):
            raise ApiError(
                400, "illegal_argument_exception", f"model {model_id} is {model['model_state']}"
            )
        error = None
        try:
            self.embedders[model_id] = FakeMLEmbedder(
                self.model_chunks[model_id][0], model["model_config"]
            )
            model["model_state"] = "DEPLOYED"
        except Exception as exc:  # what ML Commons reports on the task
            error = f"{type(exc).__name__}: {exc}"
            model["model_state"] = "DEPLOY_FAILED"
        task = self._task("DEPLOY_MODEL", model_id, error)
        return 200, {"task_id": task.task_id, "task_type": "DEPLOY_MODEL", "status": "CREATED"}

    def _h_ml_get_task(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        task = self.tasks.get(pp["task_id"])
        if task is None:
            raise ApiError(404, "status_exception", "Failed to find task")
        state = task.state
        if task.polls_left > 0:
            task.polls_left -= 1
            state = "RUNNING"
        out = {
            "task_id": task.task_id,
            "model_id": task.model_id,
            "task_type": task.task_type,
            "function_name": "TEXT_EMBEDDING",
            "state": state,
            "is_async": True,
        }
        if task.error and state == "FAILED":
            out["error"] = task.error
        return 200, out

    def _h_ml_get_model(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        model = self.models.get(pp["model_id"])
        if model is None:
            raise ApiError(404, "status_exception", "Failed to find model")
        return 200, dict(model)

    def _h_ml_search_models(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        docs = {i: m for i, m in self.models.items()}
        index = FakeIndex("ml-models", {}, {"properties": {}})
        scores = self._evaluate(body.get("query", {"match_all": {}}), index, docs)
        hits = [
            {"_index": ".plugins-ml-model", "_id": i, "_score": s, "_source": docs[i]}
            for i, s in sorted(scores.items())
        ]
        return 200, {
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "hits": hits[: body.get("size", 10)],
            }
        }
