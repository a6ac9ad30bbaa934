"""A tiny ONNX document encoder and its reference vectors, for tests that need no torch."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

TINY_WORDS = (
    "the a of and to in is star planet moon sun orbit galaxy light comet bread oven flour "
    "heart blood cell virus vaccine brain gene protein computer code data network music "
    "piano song sport ball team game river ocean wave fish rock volcano"
)


def build_onnx_model_dir(
    folder: Any, *, dim: int = 8, max_doc_length: int = 16, seed: int = 0
) -> Any:
    """A model directory without torch: manifest.json, tokenizer.json, a tiny ONNX encoder.

    The encoder follows the exporter's contract (inputs input_ids, attention_mask,
    token_type_ids; output `embedding` [batch, dim], mean-pooled and L2-normalised).
    """
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import TemplateProcessing

    from twinbert_search.manifest import ModelManifest

    folder = Path(folder)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    words = TINY_WORDS.split()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {
        t: i
        for i, t in enumerate(
            dict.fromkeys(specials + words + letters + [f"##{c}" for c in letters])
        )
    }
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = BertNormalizer(lowercase=True)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.save(str(folder / "tokenizer.json"))

    rng = np.random.default_rng(seed)
    table = rng.standard_normal((len(vocab), dim)).astype(np.float32)
    types = rng.standard_normal((2, dim)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["typ"]),
        helper.make_node("Add", ["tok", "typ"], ["x"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["x", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("Mul", ["mean", "mean"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis1"], ["sqsum"], keepdims=1),
        helper.make_node("Sqrt", ["sqsum"], ["norm"]),
        helper.make_node("Max", ["norm", "eps"], ["safe"]),
        helper.make_node("Div", ["mean", "safe"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-document-encoder",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(types, "types"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "onnx" / "document_encoder.onnx"))
    ModelManifest(
        dim=dim,
        fingerprint=hashlib.sha256(table.tobytes()).hexdigest()[:32],
        max_doc_length=max_doc_length,
        onnx={"document_encoder": "onnx/document_encoder.onnx"},
    ).save(folder)
    return folder


def encode_with_onnx(model_dir: Any, texts: list[str]) -> np.ndarray:
    """Reference document vectors: the original encoder, one text at a time, truncated."""
    from pathlib import Path

    import onnxruntime as ort
    from tokenizers import Tokenizer

    from twinbert_search.manifest import ModelManifest

    model_dir = Path(model_dir)
    manifest = ModelManifest.load(model_dir)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=manifest.max_doc_length)
    session = ort.InferenceSession(
        str(model_dir / manifest.onnx["document_encoder"]), providers=["CPUExecutionProvider"]
    )
    out = []
    for text in texts:
        enc = tok.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        out.append(session.run(["embedding"], feeds)[0][0])
    return np.asarray(out, dtype=np.float32)
