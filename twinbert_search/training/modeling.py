"""TwinBERT in PyTorch: two BERT towers with pooling, and a crossing layer.

Towers load from any local Hugging Face BERT-family checkpoint. `num_layers` keeps only the
first N transformer layers (the paper's compressed student). Weighted-average pooling starts
with zero token scores, which is exactly mean pooling, so a pretrained mean-pooled encoder
(all-MiniLM-L6-v2) keeps its quality at step 0 and training only learns the difference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from twinbert_search.errors import ModelError
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.training.conventions import TowerConventions
from twinbert_search.training.crossing import build_crossing, load_crossing_weights, save_crossing

log = logging.getLogger(__name__)

BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie")
HEAD_FILE = "head.safetensors"


def load_backbone(path: str | Path, num_layers: int | None = None) -> nn.Module:
    """A local BERT-family checkpoint as a transformers model, optionally truncated."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"checkpoint directory not found: {path}", path=str(path))
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} is not a Hugging Face checkpoint (no config.json)", path=str(path)
        )
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable config.json ({exc})", path=str(path)) from None
    if config.model_type not in BERT_LIKE:
        raise ModelError(
            f"{path}: model_type {config.model_type!r} is not BERT-like "
            f"(supported: {', '.join(BERT_LIKE)})",
            path=str(path),
        )
    if num_layers is not None:
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise ModelError(
                f"num_layers must be in 1..{config.num_hidden_layers}, got {num_layers}"
            )
        config.num_hidden_layers = num_layers
    try:
        return AutoModel.from_pretrained(
            str(path), config=config, local_files_only=True, add_pooling_layer=False
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load weights ({exc})", path=str(path)) from None


def bert_inputs(
    config: object,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Keyword inputs for a BERT-family model; token types only where it has more than one.

    RoBERTa-style models have a single token type, and passing segment ids would be wrong.
    """
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None and getattr(config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = token_type_ids
    return inputs


class Pooling(nn.Module):
    """[CLS], mean, or learned weighted average over non-padding tokens."""

    def __init__(self, hidden: int, mode: str = "mean") -> None:
        super().__init__()
        self.mode = mode
        self.score = nn.Linear(hidden, 1) if mode == "weighted" else None
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return tokens[:, 0]
        maskf = mask.unsqueeze(-1).to(tokens.dtype)
        if self.mode == "mean":
            return (tokens * maskf).sum(1) / maskf.sum(1).clamp(min=1.0)
        scores = self.score(tokens).squeeze(-1).masked_fill(mask == 0, -1e4)
        weights = torch.softmax(scores, dim=-1).unsqueeze(-1)
        return (tokens * weights).sum(1)


class Tower(nn.Module):
    """One encoder: backbone -> pooling -> optional projection + tanh -> optional L2 norm."""

    def __init__(
        self,
        backbone: nn.Module,
        pooling: str,
        projection_dim: int | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        hidden = backbone.config.hidden_size
        self.backbone = backbone
        self.pooling = Pooling(hidden, pooling)
        self.projection = nn.Linear(hidden, projection_dim) if projection_dim else None
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return self.projection.out_features if self.projection else self.backbone.config.hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = bert_inputs(self.backbone.config, input_ids, attention_mask, token_type_ids)
        tokens = self.backbone(**inputs).last_hidden_state
        vec = self.pooling(tokens, attention_mask)
        if self.projection is not None:
            vec = torch.tanh(self.projection(vec))
        return F.normalize(vec, dim=-1) if self.normalize else vec

    def head_state(self) -> dict[str, torch.Tensor]:
        state = {}
        for name, module in (("pooling", self.pooling), ("projection", self.projection)):
            if module is not None:
                state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return state

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(folder), safe_serialization=True)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head_state().items()}
        if head:
            save_file(head, str(folder / HEAD_FILE))

    def load_head(self, folder: Path) -> None:
        path = folder / HEAD_FILE
        if not path.is_file():
            return
        state = load_file(str(path))
        for name, module in (("pooling", self.pooling), ("projection", self.projection)):
            if module is not None:
                sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
                module.load_state_dict(sub)


@dataclass
class TwinBertConfig:
    """How to build a TwinBERT from a checkpoint."""

    pooling: str = "weighted"
    projection_dim: int | None = None
    normalize: bool = True
    shared_towers: bool = True
    num_layers: int | None = None
    max_query_length: int = 64
    max_doc_length: int = 256
    crossing: CrossingConfig | None = None
    # None: the checkpoint's own (`training.conventions`, written by `models to-torch`), else "".
    query_prefix: str | None = None
    document_prefix: str | None = None


class TwinBert(nn.Module):
    """Query tower, document tower (possibly the same module) and a crossing layer."""

    def __init__(
        self, query_tower: Tower, doc_tower: Tower, crossing: nn.Module, manifest: ModelManifest
    ):
        super().__init__()
        self.query_tower = query_tower
        self.doc_tower = doc_tower
        self.crossing = crossing
        self.manifest = manifest

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: TwinBertConfig | None = None) -> TwinBert:
        config = config or TwinBertConfig()
        crossing_config = config.crossing or CrossingConfig()
        conventions = TowerConventions.read(path)
        if conventions is not None and conventions.pooling != config.pooling:
            log.warning(
                "%s: training with %s pooling; the tower was trained with %s pooling",
                path,
                config.pooling,
                conventions.pooling,
            )
        query = Tower(
            load_backbone(path, config.num_layers),
            config.pooling,
            config.projection_dim,
            config.normalize,
        )
        doc = query if config.shared_towers else copy.deepcopy(query)
        backbone_cfg = query.backbone.config
        manifest = ModelManifest(
            dim=query.dim,
            pooling=config.pooling,
            projection_dim=config.projection_dim,
            normalize=config.normalize,
            shared_towers=config.shared_towers,
            num_layers=backbone_cfg.num_hidden_layers,
            max_query_length=config.max_query_length,
            max_doc_length=min(config.max_doc_length, backbone_cfg.max_position_embeddings),
            crossing=crossing_config,
            base_model=str(path),
            query_prefix=_prefix(config.query_prefix, conventions, "query_prefix"),
            document_prefix=_prefix(config.document_prefix, conventions, "document_prefix"),
        )
        manifest.validate()
        return cls(query, doc, build_crossing(crossing_config, query.dim), manifest)

    def encode_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query_tower(**batch)

    def encode_documents(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.doc_tower(**batch)

    def forward(
        self, queries: dict[str, torch.Tensor], docs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Pairwise logits for aligned (query_i, doc_i) batches."""
        return self.crossing(self.encode_queries(queries), self.encode_documents(docs))

    def fingerprint(self) -> str:
        """sha256 over every weight, so two models with equal fingerprints encode alike."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self._manifest_identity(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _manifest_identity(self) -> dict:
        m = self.manifest
        identity = {
            "pooling": m.pooling,
            "normalize": m.normalize,
            "projection_dim": m.projection_dim,
            "max_query_length": m.max_query_length,
            "max_doc_length": m.max_doc_length,
            "crossing": self._crossing_identity(),
        }
        # What the towers are fed changes what they encode; only where set, so the models
        # without them keep their fingerprints (and their indexes).
        for key in ("query_prefix", "document_prefix", "document_pooling"):
            if getattr(m, key):
                identity[key] = getattr(m, key)
        return identity

    def _crossing_identity(self) -> list:
        # A cosine crossing has no combine or hidden size: leaving them out keeps a cosine
        # model's fingerprint (and its indexes) valid when the residual defaults change.
        c = self.manifest.crossing
        return [c.type] if c.type == "cosine" else [c.type, c.combine, c.hidden]

    def save(self, model_dir: str | Path, tokenizer_file: str | Path) -> ModelManifest:
        """Write the torch side of a model directory (weights, tokenizer, manifest)."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.query_tower.save(model_dir / "query_encoder")
        if not self.manifest.shared_towers:
            self.doc_tower.save(model_dir / "document_encoder")
        save_crossing(self.crossing, model_dir / "crossing")
        (model_dir / "crossing" / "config.json").write_text(
            json.dumps(self.manifest.crossing.__dict__, indent=2) + "\n"
        )
        if Path(tokenizer_file).resolve() != (model_dir / "tokenizer.json").resolve():
            shutil.copyfile(tokenizer_file, model_dir / "tokenizer.json")
        self.manifest.fingerprint = self.fingerprint()
        self.manifest.versions.update(_versions())
        self.manifest.save(model_dir)
        return self.manifest

    @classmethod
    def load(cls, model_dir: str | Path) -> TwinBert:
        """Load a model directory written by `save` (or `export`) back into torch; an imported
        one (`models fetch`: ONNX graphs only) from its graph's weights, checked against it."""
        model_dir = Path(model_dir)
        manifest = ModelManifest.load(model_dir)
        if not (model_dir / "query_encoder").is_dir() and "pretrained" in manifest.extra:
            return cls._imported(model_dir, manifest)
        query = Tower(
            load_backbone(model_dir / "query_encoder"),
            manifest.pooling,
            manifest.projection_dim,
            manifest.normalize,
        )
        query.load_head(model_dir / "query_encoder")
        if manifest.shared_towers:
            doc = query
        else:
            doc = Tower(
                load_backbone(model_dir / "document_encoder"),
                manifest.document_pooling or manifest.pooling,
                manifest.projection_dim,
                manifest.normalize,
            )
            doc.load_head(model_dir / "document_encoder")
        crossing = build_crossing(manifest.crossing, query.dim)
        load_crossing_weights(crossing, model_dir / "crossing")
        return cls(query, doc, crossing, manifest)

    @classmethod
    def _imported(cls, model_dir: Path, manifest: ModelManifest) -> TwinBert:
        """An imported tower: one graph serves both sides (shared towers), cosine crossing."""
        tower = _imported_tower(model_dir, manifest)
        crossing = build_crossing(manifest.crossing, tower.dim)
        load_crossing_weights(crossing, model_dir / "crossing")
        return cls(tower, tower, crossing, manifest)


def _imported_tower(model_dir: Path, manifest: ModelManifest) -> Tower:
    from twinbert_search.training.onnx_bert import bert_from_model_dir

    bert, _ = bert_from_model_dir(model_dir)
    return Tower(bert, manifest.pooling, manifest.projection_dim, manifest.normalize)


def _prefix(given: str | None, conventions: TowerConventions | None, key: str) -> str:
    """A prefix asked for, else the checkpoint's convention, else none."""
    if given is not None:
        return given
    return getattr(conventions, key) if conventions is not None else ""


def _versions() -> dict[str, str]:
    import transformers

    from twinbert_search import __version__

    return {
        "twinbert_search": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def frozen_document_student(
    checkpoint: str | Path,
    base_model: str | Path,
    crossing: CrossingConfig,
    *,
    pooling: str = "mean",
    num_layers: int | None = None,
    max_query_length: int = 64,
) -> TwinBert:
    """A student warm-started for distillation behind an existing index.

    Its query tower starts from `checkpoint` (first `num_layers` layers); its document tower
    is `base_model`'s, frozen, so the vectors an index of the base model stores are this
    student's document vectors (its manifest says so) and only the query tower and a fresh
    crossing layer learn. The query tower keeps the checkpoint's query prefix (an imported
    tower's convention); the document side keeps the base model's prefix and pooling. Draws
    from torch's global generator (the crossing's init): seed first.
    """
    base = ModelManifest.load(base_model)
    conventions = TowerConventions.read(checkpoint)
    query = Tower(load_backbone(checkpoint, num_layers), pooling, None, base.normalize)
    doc = TwinBert.load(base_model).doc_tower  # the base model's, exactly
    doc_pooling = base.document_pooling or base.pooling
    for p in doc.parameters():
        p.requires_grad_(False)
    crossing_module = build_crossing(crossing, query.dim)
    manifest = ModelManifest(
        dim=query.dim,
        pooling=pooling,
        normalize=base.normalize,
        shared_towers=False,
        num_layers=query.backbone.config.num_hidden_layers,
        max_query_length=max_query_length,
        max_doc_length=base.max_doc_length,
        crossing=crossing,
        base_model=str(checkpoint),
        query_prefix=conventions.query_prefix if conventions is not None else "",
        document_prefix=base.document_prefix,
        document_pooling="" if doc_pooling == pooling else doc_pooling,
    )
    manifest.document_fingerprint = base.document_fingerprint or base.fingerprint
    return TwinBert(query, doc, crossing_module, manifest)
