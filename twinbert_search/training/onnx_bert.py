"""An imported tower's ONNX graph as a torch `transformers` BertModel, for training.

The LangChain4j jars (`twinbert_search.pretrained`) ship BERT encoders as ONNX graphs whose
initialisers keep the Hugging Face names for embeddings, biases and LayerNorms; the dense
weights are anonymous MatMul inputs (`onnx::MatMul_123`, stored transposed, [in, out]). Each
MatMul's weight is named after the bias its output is added to (`X.bias` -> `X.weight`), and
the whole state dict is then checked: every BertModel weight found, and the torch model's
token embeddings equal to the graph's on a few sentences (`parity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BertConfig, BertModel

from twinbert_search.errors import ModelError
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.conventions import TowerConventions

__all__ = [
    "ParityReport",
    "bert_from_model_dir",
    "bert_from_onnx",
    "checkpoint_from_model_dir",
    "onnx_state_dict",
    "parity",
]

PARITY_TEXTS = (
    "a",
    "what causes the northern lights",
    "Protein folding determines function; misfolding is linked to disease. " * 8,
)


def _hf_name(name: str) -> str:
    """A BertModel key from an initialiser's name (a task model's graph prefixes `bert.`)."""
    return name[len("bert.") :] if name.startswith("bert.") else name


def onnx_state_dict(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """BertModel's state dict from the graph's initialisers (pooler and position ids dropped)."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def named(name: str) -> bool:
        return _hf_name(name).startswith(("embeddings.", "encoder."))

    state = {
        _hf_name(name): numpy_helper.to_array(init)
        for name, init in inits.items()
        if named(name) and _hf_name(name) != "embeddings.position_ids"
    }
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((name for name in node.input if name in inits), None)
        if weight is None or named(weight):
            continue  # an activation product (attention), or a weight already named
        bias = next(
            (
                name
                for add in consumers.get(node.output[0], [])
                if add.op_type == "Add"
                for name in add.input
                if name.endswith(".bias") and name in inits and named(name)
            ),
            None,
        )
        if bias is None:
            continue  # e.g. the pooler's, fed through another path
        key = _hf_name(bias)[: -len(".bias")] + ".weight"
        state[key] = numpy_helper.to_array(inits[weight]).T
    return state


def _config(state: dict[str, np.ndarray], num_heads: int, layer_norm_eps: float) -> BertConfig:
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(
        (int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")), default=-1
    )
    return BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=layers,
        num_attention_heads=num_heads,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=layer_norm_eps,
        pad_token_id=0,
    )


def bert_from_onnx(
    graph: str | Path | onnx.ModelProto, *, num_heads: int = 12, layer_norm_eps: float = 1e-12
) -> BertModel:
    """A BertModel (no pooler) holding the graph's weights; every weight must be found."""
    model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph))
    state = onnx_state_dict(model)
    if "embeddings.word_embeddings.weight" not in state:
        raise ModelError("the ONNX graph holds no BERT embeddings (embeddings.word_embeddings)")
    config = _config(state, num_heads, layer_norm_eps)
    if config.hidden_size % num_heads:
        raise ModelError(f"hidden size {config.hidden_size} is not divisible by {num_heads} heads")
    bert = BertModel(config, add_pooling_layer=False)
    expected = set(bert.state_dict()) - {"embeddings.position_ids"}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(
            f"the ONNX graph does not map onto BertModel: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    tensors = {k: torch.tensor(v) for k, v in state.items()}
    bert.load_state_dict(tensors, strict=False)
    return bert.eval()


@dataclass
class ParityReport:
    """How far the torch model's token embeddings are from the graph's."""

    max_abs_diff: float
    texts: int


def parity(
    bert: BertModel,
    graph: str | Path,
    tokenizer: str | Path,
    texts: Sequence[str] = PARITY_TEXTS,
    max_length: int = 256,
    *,
    pooling: str | None = None,
) -> ParityReport:
    """Max |diff| of last_hidden_state over real tokens, torch vs ONNX Runtime; or, for a
    tower graph (one [batch, dim] output, `pooling` given), of the normalised sentence vectors.
    """
    import onnxruntime as ort

    batch = TextTokenizer.from_file(tokenizer, max_length)(list(texts))
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    hidden_onnx = session.run(None, {k: v for k, v in batch.items() if k in names})[0]
    with torch.no_grad():
        out = bert(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state
    mask = batch["attention_mask"][..., None].astype(bool)
    if hidden_onnx.ndim == 2:
        if pooling not in ("cls", "mean"):
            raise ModelError(
                f"a tower graph's parity needs pooling 'cls' or 'mean', got {pooling!r}"
            )
        hidden = out.numpy()
        pooled = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return ParityReport(float(np.abs(pooled - hidden_onnx).max()), len(texts))
    diff = np.abs(out.numpy() - hidden_onnx) * mask
    return ParityReport(max_abs_diff=float(diff.max()), texts=len(texts))


def bert_from_model_dir(
    model_dir: str | Path, *, num_heads: int | None = None, tolerance: float = 1e-4
) -> tuple[BertModel, ParityReport]:
    """An imported model directory's fp32 tower as a BertModel, parity-checked against its
    graph (a wrong head count is the usual cause of divergence). `num_heads` None: the one
    the import recorded (`extra.pretrained.num_heads`), else 12."""
    from twinbert_search.manifest import ModelManifest

    model_dir = Path(model_dir)
    manifest = ModelManifest.load(model_dir)
    if num_heads is None:
        num_heads = int((manifest.extra.get("pretrained") or {}).get("num_heads", 12))
    graph = model_dir / manifest.onnx["query_encoder"]
    bert = bert_from_onnx(graph, num_heads=num_heads)
    tokenizer = model_dir / "tokenizer.json"
    report = parity(
        bert, graph, tokenizer, max_length=manifest.max_doc_length, pooling=manifest.pooling
    )
    if report.max_abs_diff > tolerance:
        raise ModelError(
            f"{graph}: the torch BERT diverges from the ONNX graph "
            f"(max |diff| {report.max_abs_diff:.2e} > {tolerance:.0e}; wrong head count?)"
        )
    return bert, report


def checkpoint_from_model_dir(
    model_dir: str | Path,
    out: str | Path,
    *,
    num_heads: int | None = None,
    tolerance: float = 1e-4,
) -> ParityReport:
    """Write `out`, a Hugging Face BERT checkpoint (config.json, model.safetensors,
    tokenizer.json) of an imported model directory's fp32 tower, parity-checked against it.

    Training starts from it as from any checkpoint (`TwinBert.from_checkpoint`); the tower's
    pooling and prefixes go beside it (`training.conventions`), so a student started from it
    is fed what the tower was trained on.
    """
    import shutil

    from twinbert_search.manifest import ModelManifest

    model_dir, out = Path(model_dir), Path(out)
    manifest = ModelManifest.load(model_dir)
    bert, report = bert_from_model_dir(model_dir, num_heads=num_heads, tolerance=tolerance)
    out.mkdir(parents=True, exist_ok=True)
    bert.save_pretrained(str(out))
    shutil.copyfile(model_dir / "tokenizer.json", out / "tokenizer.json")
    TowerConventions.of_manifest(manifest).save(out)
    return report
