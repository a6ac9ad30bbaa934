"""The model manifest: what a TwinBERT model directory is, readable without torch.

A model directory loads from its path alone (the sentence-transformers idea):

    manifest.json            this file's dataclass
    tokenizer.json           Hugging Face fast tokenizer
    query_encoder/           HF BERT checkpoint (config.json, model.safetensors) + pooling.json
    document_encoder/        same; absent when the towers share weights
    crossing/                config.json + model.safetensors (numpy-readable)
    onnx/                    query_encoder.onnx, document_encoder.onnx (+ .int8.onnx, and
                             document_encoder.static-int8.onnx from `twinbert-search quantize`)

A pretrained tower imported by `twinbert-search models fetch` has no HF checkpoint folders:
manifest.json, tokenizer.json, a cosine crossing/ and onnx/ (`twinbert_search.pretrained`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twinbert_search import __version__
from twinbert_search.errors import ModelError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
POOLINGS = ("mean", "weighted", "cls")
CROSSINGS = ("cosine", "residual")
COMBINES = ("max", "concat", "mul")
# manifest.onnx key of the calibrated static int8 document graph (twinbert_search.quantization)
STATIC_INT8_KEY = "document_encoder_static_int8"
# manifest.onnx key of the int8 residual crossing graph (quantization.crossing_graph)
CROSSING_INT8_KEY = "crossing_int8"


@dataclass
class CrossingConfig:
    """Which crossing layer scores a (query, document) pair, and its sizes."""

    type: str = "cosine"
    combine: str = "max"  # residual only
    # Residual only. 128: the SciFact recipe measured no consistent loss against 256 (two
    # runs: 0.6673 / 0.6783 vs 0.6731 / 0.6683 nDCG@10, RESULTS.md) at half the rerank cost.
    hidden: int = 128
    # The paper's residual block ends at the add-back: logit = out(x + dense2(relu(dense1(x)))),
    # which is linear after the hidden ReLU, so serving folds dense2 into the output vector.
    # True only for models trained before 0.1.0 settled this (their manifests lack the key).
    output_relu: bool = False  # residual only

    def validate(self) -> None:
        if self.type not in CROSSINGS:
            raise ModelError(f"crossing.type must be one of {CROSSINGS}, got {self.type!r}")
        if self.type == "residual":
            if self.combine not in COMBINES:
                raise ModelError(
                    f"crossing.combine must be one of {COMBINES}, got {self.combine!r}"
                )
            if self.hidden < 1:
                raise ModelError(f"crossing.hidden must be positive, got {self.hidden}")


@dataclass
class ModelManifest:
    """Everything needed to serve a model, recorded beside its weights."""

    dim: int
    pooling: str = "mean"
    projection_dim: int | None = None
    normalize: bool = True
    shared_towers: bool = True
    num_layers: int | None = None
    max_query_length: int = 64
    max_doc_length: int = 256
    crossing: CrossingConfig = field(default_factory=CrossingConfig)
    fingerprint: str = ""
    # Set when the document tower is another model's, unchanged (a student distilled with a
    # frozen document tower): that model's fingerprint, so its stored vectors serve this one.
    document_fingerprint: str = ""
    onnx: dict[str, str] = field(default_factory=dict)
    base_model: str | None = None
    # Text put before every query / document before tokenizing (an imported tower's card asks
    # for them: bge's retrieval instruction, e5's "query: " / "passage: "). Written only when
    # set, so manifests without them stay readable by earlier versions.
    query_prefix: str = ""
    document_prefix: str = ""
    # The document tower's pooling where it differs from the query tower's (`pooling`): a
    # student whose frozen document tower is another model's. Written only when set.
    document_pooling: str = ""
    format_version: int = FORMAT_VERSION
    versions: dict[str, str] = field(default_factory=lambda: {"twinbert_search": __version__})
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.pooling not in POOLINGS:
            raise ModelError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.document_pooling and self.document_pooling not in POOLINGS:
            raise ModelError(
                f"document_pooling must be one of {POOLINGS}, got {self.document_pooling!r}"
            )
        if self.dim < 1:
            raise ModelError(f"dim must be positive, got {self.dim}")
        if self.max_query_length < 2 or self.max_doc_length < 2:
            raise ModelError("max_query_length and max_doc_length must be at least 2")
        self.crossing.validate()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("query_prefix", "document_prefix", "document_pooling"):
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "manifest") -> ModelManifest:
        data = dict(data)
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ModelError(
                f"{source}: format_version {version} is newer than this twinbert-search "
                f"({__version__}) understands ({FORMAT_VERSION}); upgrade twinbert-search"
            )
        try:
            crossing_data = dict(data.pop("crossing", {}))
            crossing_data.setdefault("output_relu", True)  # manifests written before the key
            crossing = CrossingConfig(**crossing_data)
            manifest = cls(crossing=crossing, **data)
        except TypeError as exc:
            raise ModelError(f"{source}: unexpected or missing key ({exc})") from None
        manifest.validate()
        return manifest

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / MANIFEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelManifest:
        path = Path(model_dir) / MANIFEST_NAME
        if not Path(model_dir).is_dir():
            raise ModelError(f"model directory not found: {model_dir}", path=str(model_dir))
        if not path.is_file():
            raise ModelError(
                f"{model_dir} is not a twinbert-search model (no {MANIFEST_NAME}); "
                "build one with `twinbert-search export` or `distill`",
                path=str(model_dir),
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: invalid JSON ({exc})", path=str(path)) from None
        return cls.from_dict(data, source=str(path))
