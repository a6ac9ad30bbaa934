"""Shared fixtures: a tiny BERT built on the spot, and a tiny exported TwinBERT.

Everything is made inside the test session (no downloads): a WordPiece vocabulary from a
word list, a 2-layer BertConfig with random weights, a tokenizer.json from that vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.elasticsearch_node import elasticsearch_url  # noqa: F401  (the real node fixture)
from tests.opensearch_cluster import opensearch_cluster  # noqa: F401  (-m opensearch_cluster)
from tests.opensearch_node import node_stores, opensearch_node  # noqa: F401  (-m opensearch)
from tests.opensearch_secured_node import secured_opensearch_node  # noqa: F401  (-m opensearch)
from twinbert_search.service.logs import CLIENT_LOGGERS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCIFACT = SHARED / "datasets" / "scifact"

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "are",
    "be",
    "or",
    "an",
    "star",
    "planet",
    "moon",
    "sun",
    "orbit",
    "galaxy",
    "telescope",
    "light",
    "comet",
    "cook",
    "bread",
    "oven",
    "flour",
    "salt",
    "sugar",
    "heart",
    "blood",
    "cell",
    "virus",
    "vaccine",
    "doctor",
    "brain",
    "gene",
    "protein",
    "computer",
    "code",
    "data",
    "network",
    "memory",
    "rock",
    "volcano",
    "river",
    "ocean",
    "wave",
    "fish",
    "music",
    "piano",
    "song",
    "sport",
    "ball",
    "team",
    "game",
    "tree",
    "leaf",
    "plant",
    "money",
    "price",
    "market",
    "bank",
    "war",
    "king",
    "city",
    "train",
    "car",
    "road",
    "ship",
    "engine",
    "what",
    "how",
    "why",
    "when",
    "does",
]


def _build_tiny_checkpoint(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:!?'-")
    pieces = [f"##{c}" for c in letters]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + WORDS + letters + pieces))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = BertNormalizer(lowercase=True)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=0,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT checkpoint directory with tokenizer.json."""
    return _build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_model(checkpoint: Path, folder: Path, **overrides) -> Path:
    """Save and export a tiny TwinBERT (torch-side) into `folder`."""
    from twinbert_search.manifest import CrossingConfig
    from twinbert_search.training.export import export_model
    from twinbert_search.training.modeling import TwinBert, TwinBertConfig

    crossing = overrides.pop("crossing", CrossingConfig("residual", "concat", 16))
    int8 = overrides.pop("int8", False)
    config = TwinBertConfig(max_query_length=16, max_doc_length=48, crossing=crossing, **overrides)
    model = TwinBert.from_checkpoint(checkpoint, config)
    model.save(folder, checkpoint / "tokenizer.json")
    export_model(folder, int8=int8)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported tiny TwinBERT with a residual (concat) crossing layer and int8 graphs."""
    return build_tiny_model(tiny_checkpoint, tmp_path_factory.mktemp("tiny-twinbert"), int8=True)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module: tiny models gain nothing from threads, and lose a
    lot on a shared, busy machine. Training modules use it with `pytestmark`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`serve` (run in-process by CliRunner) sets process-wide logger levels and filters: every
    test gets them back as they were, so a test that reads client records sees them."""
    names = ["", *CLIENT_LOGGERS, "urllib3.connectionpool"]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names}
    yield
    for name, (level, filters) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.filters[:] = filters
