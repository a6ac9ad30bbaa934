"""A loaded TwinBERT model for serving: two ONNX towers and a numpy crossing layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twinbert_search.errors import ModelError
from twinbert_search.manifest import CROSSING_INT8_KEY, STATIC_INT8_KEY, ModelManifest
from twinbert_search.runtime.crossing import Crossing, load_crossing, sigmoid
from twinbert_search.runtime.encoder import OnnxEncoder, ProgressFn, make_session
from twinbert_search.runtime.tokenization import TextTokenizer

# Document graph variants and the suffix each adds to the vectors' fingerprint.
DOCUMENT_GRAPHS = {"fp32": "", "int8": ":int8", "openvino-int8": ":openvino-int8"}


def document_graph_of(fingerprint: str | None) -> str:
    """Which document graph computed the vectors a store records `fingerprint` for."""
    for name, suffix in DOCUMENT_GRAPHS.items():
        if suffix and (fingerprint or "").endswith(suffix):
            return name
    return "fp32"


class TwinBertRuntime:
    """Encode queries and documents and score candidates, with onnxruntime and numpy only.

    `int8` picks the dynamically quantized graphs written by `export --int8`;
    `document_graph="openvino-int8"` the static int8 document graph (`twinbert-search
    quantize`) on OpenVINO, for indexing. The document fingerprint includes the graph
    variant, because a store must not mix vectors from two.
    """

    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        query_encoder: OnnxEncoder,
        document_encoder: OnnxEncoder,
        crossing: Crossing,
        *,
        int8: bool = False,
        document_graph: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self.query_encoder = query_encoder
        self.document_encoder = document_encoder
        self.crossing = crossing
        self.document_graph = document_graph or ("int8" if int8 else "fp32")
        if self.document_graph not in DOCUMENT_GRAPHS:
            raise ModelError(
                f"document graph must be one of {tuple(DOCUMENT_GRAPHS)}, "
                f"got {self.document_graph!r}"
            )

    @property
    def int8(self) -> bool:
        """Whether documents go through the dynamic int8 graph."""
        return self.document_graph == "int8"

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        int8: bool = False,
        threads: int | None = None,
        query_int8: bool | None = None,
        document_int8: bool | None = None,
        document_graph: str | None = None,
        spinning: bool = True,
        crossing_int8: bool | None = None,
    ) -> TwinBertRuntime:
        """Load an exported model directory (see `twinbert_search.manifest`).

        `document_graph` ("fp32", "int8", "openvino-int8") overrides `int8` and
        `document_int8` for the document side. `spinning=False` keeps the sessions' threads
        from spin-waiting after a run (see `make_session`). Spinning is ONNX Runtime's default
        and makes a multi-threaded query encode faster, but the spinning threads hold the
        cores that numpy's BLAS threads want right after (a float residual crossing):
        BENCHMARKS.md has both sides (`benchmarks/pipeline_ab.py`); with one thread, or with
        the int8 crossing graph (one thread), neither applies. `crossing_int8` scores with
        the int8 crossing graph; by default it follows the query side, where the model has
        one (residual max or mul crossings exported with --int8).
        """
        model_dir = Path(model_dir)
        manifest = ModelManifest.load(model_dir)
        q8 = int8 if query_int8 is None else query_int8
        if document_graph is None:
            document_graph = (
                "int8" if (int8 if document_int8 is None else document_int8) else "fp32"
            )

        def graph(role: str, quantized: bool) -> Path:
            return path_of(f"{role}_int8" if quantized else role)

        def path_of(key: str) -> Path:
            rel = manifest.onnx.get(key)
            if rel is None:
                if key == STATIC_INT8_KEY:
                    hint = "build it with `twinbert-search quantize`"
                elif key == CROSSING_INT8_KEY and (
                    manifest.crossing.type != "residual" or manifest.crossing.combine == "concat"
                ):
                    hint = "only residual crossings combining by max or mul have one"
                elif key.endswith("_int8"):
                    hint = "export with --int8"
                else:
                    hint = "run `twinbert-search export`"
                raise ModelError(
                    f"{model_dir}: no ONNX graph for {key} ({hint})", path=str(model_dir)
                )
            return model_dir / rel

        crossing_graph = None
        if crossing_int8 or (crossing_int8 is None and q8 and CROSSING_INT8_KEY in manifest.onnx):
            crossing_graph = path_of(CROSSING_INT8_KEY)
        tok_path = model_dir / "tokenizer.json"
        query_tok = TextTokenizer.from_file(tok_path, manifest.max_query_length)
        doc_tok = TextTokenizer.from_file(tok_path, manifest.max_doc_length)
        q_sess = make_session(graph("query_encoder", q8), threads, spinning=spinning)
        if document_graph == "openvino-int8":
            from twinbert_search.runtime.openvino import OpenVinoSession

            d_sess = OpenVinoSession(path_of(STATIC_INT8_KEY), threads)
        else:
            d_path = graph("document_encoder", document_graph == "int8")
            d_sess = (
                q_sess
                if d_path == graph("query_encoder", q8)
                else make_session(d_path, threads, spinning=spinning)
            )
        return cls(
            model_dir,
            manifest,
            OnnxEncoder(q_sess, query_tok, prefix=manifest.query_prefix, one_per_run=q8),
            # type: ignore below: an OpenVinoSession serves as the session too
            OnnxEncoder(d_sess, doc_tok, prefix=manifest.document_prefix),  # type: ignore[arg-type]
            load_crossing(model_dir, manifest.crossing, manifest.normalize, crossing_graph),
            document_graph=document_graph,
        )

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def fingerprint(self) -> str:
        """Identifies the document vectors this runtime produces."""
        suffix = DOCUMENT_GRAPHS[self.document_graph]
        return f"{self.manifest.document_fingerprint or self.manifest.fingerprint}{suffix}"

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.query_encoder.encode(texts, batch_size)

    def encode_query(self, text: str) -> np.ndarray:
        return self.query_encoder.encode([text], 1)[0]

    def encode_documents(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        *,
        sort_by_length: bool = True,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        return self.document_encoder.encode(
            texts, batch_size, sort_by_length=sort_by_length, progress=progress
        )

    def precompute_documents(self, vectors: np.ndarray) -> np.ndarray | None:
        """Per-document crossing-layer work that can be done at ingest (None if there is none)."""
        return self.crossing.precompute(vectors)

    def score(
        self,
        query_vector: np.ndarray,
        doc_vectors: np.ndarray,
        precomputed: np.ndarray | None = None,
    ) -> np.ndarray:
        """Relevance probabilities of every candidate for one query, in one call."""
        return sigmoid(self.crossing.logits(query_vector, doc_vectors, precomputed))
