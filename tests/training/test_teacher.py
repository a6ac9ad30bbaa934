"""The cross-encoder teacher: scoring, loading (ours and HF), training, resuming, bad input.

`write_tiny_beir` and `save_toy_teacher` are shared with test_distill and test_cli_train.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from twinbert_search.errors import ConfigurationError, InputError, ModelError
from twinbert_search.training.args import TeacherArgs
from twinbert_search.training.data import CHECKPOINT_DIR, load_checkpoint
from twinbert_search.training.teacher import (
    TEACHER_FILE,
    CrossEncoder,
    load_teacher,
    train_teacher,
)

DOCS = {
    "d1": ("star light", "the star is a sun of light. a telescope sees the star."),
    "d2": ("planet orbit", "the planet has an orbit on the sun. the moon is with the planet."),
    "d3": ("comet", "a comet of the galaxy. the comet light is seen by the telescope."),
    "d4": ("bread oven", "cook the bread in the oven. flour and salt and sugar."),
    "d5": ("sugar", "sugar is in the bread. the cook and the sugar."),
    "d6": ("heart blood", "the heart and the blood cell. the doctor and the heart."),
    "d7": ("virus vaccine", "a vaccine for the virus. the virus is in the cell."),
    "d8": ("brain gene", "the gene and the protein of the brain. the brain cell."),
    "d9": ("computer code", "the computer code and data. the network memory."),
    "d10": ("volcano rock", "the rock of the volcano. the river and the ocean wave."),
    "d11": ("music piano", "the piano song is music. a song for the team."),
    "d12": ("market bank", "the money of the bank. the price of the market."),
}
QUERIES = {
    "q1": "what is the star light",
    "q2": "how to cook bread",
    "q3": "what does the virus do",
    "q4": "the computer memory",
    "q5": "why is the volcano rock",
    "q6": "the price of money",
}
TRAIN = [("q1", "d1", 1), ("q1", "d3", 1), ("q2", "d4", 1), ("q3", "d7", 1), ("q4", "d9", 1)]
TEST = [("q6", "d12", 1)]


def write_tiny_beir(
    folder: Path,
    *,
    docs: dict[str, tuple[str, str]] | None = None,
    train: list[tuple[str, str, int]] | None = None,
) -> Path:
    """A dozen documents on distinct topics, six queries, train and test qrels."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for doc_id, (title, text) in (docs or DOCS).items():
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for qid, text in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for name, rows in (("train", TRAIN if train is None else train), ("test", TEST)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def save_toy_teacher(checkpoint: Path, folder: Path, *, scale: float = 1.0) -> Path:
    """A random cross-encoder whose head is scaled up so its logits spread over several units."""
    torch.manual_seed(3)
    model = CrossEncoder.from_checkpoint(checkpoint, "mean")
    torch.nn.init.normal_(model.head.weight, std=scale)
    return model.save(folder, checkpoint / "tokenizer.json", max_length=48)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir"))


def _train(beir: Path, ckpt: Path, out: Path, **kwargs):
    options = dict(
        checkpoint=ckpt,
        steps=4,
        batch_size=2,
        negatives=2,
        max_length=48,
        eval_every=2,
        rerank_depth=5,
        bm25_depth=8,
        progress=False,
    )
    options.update(kwargs)
    on_step = options.pop("on_step", None)
    return train_teacher(TeacherArgs(beir, out, **options), on_step=on_step)


def test_saved_teacher_scores_like_the_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = save_toy_teacher(tiny_checkpoint, tmp_path / "teacher")
    meta = json.loads((folder / TEACHER_FILE).read_text())
    assert meta["pooling"] == "mean" and meta["max_length"] == 48
    scorer = load_teacher(folder)
    assert scorer.max_length == 48
    pairs = [("the star", "star light"), ("cook bread", "the oven and the bread of the cook")]
    model, _ = CrossEncoder.load(folder)
    assert model.fingerprint() == meta["fingerprint"]
    tok = scorer.tokenizer
    with torch.no_grad():
        batch = {k: torch.from_numpy(v) for k, v in tok.pad(tok.encode_pairs(pairs)).items()}
        expected = model.eval()(**batch).numpy()
    np.testing.assert_allclose(scorer.score(pairs), expected, atol=1e-5)
    assert float(np.ptp(scorer.score(pairs))) > 0


def test_scorer_returns_scores_in_input_order(tiny_checkpoint: Path, tmp_path: Path) -> None:
    scorer = load_teacher(save_toy_teacher(tiny_checkpoint, tmp_path / "t"), batch_size=2)
    pairs = [
        ("a", "the star"),
        ("the planet and the moon", "the orbit of the planet and the moon and the sun"),
        ("bread", "cook"),
    ]
    together = scorer.score(pairs)
    alone = np.concatenate([scorer.score([p]) for p in pairs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert scorer.score([]).shape == (0,)


def test_scorer_rejects_empty_text(tiny_checkpoint: Path, tmp_path: Path) -> None:
    scorer = load_teacher(save_toy_teacher(tiny_checkpoint, tmp_path / "t"))
    with pytest.raises(InputError, match="pair 1 has an empty document text") as info:
        scorer.score([("star", "light"), ("star", "  ")])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_load_teacher_accepts_hf_sequence_classifiers(
    tiny_checkpoint: Path, tmp_path: Path, num_labels: int
) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(str(tiny_checkpoint), num_labels=num_labels)
    torch.manual_seed(0)
    hf = BertForSequenceClassification(config).eval()
    hf.save_pretrained(str(tmp_path / "hf"))
    shutil.copy(tiny_checkpoint / "tokenizer.json", tmp_path / "hf" / "tokenizer.json")
    scorer = load_teacher(tmp_path / "hf", max_length=32)
    pairs = [("the star", "star light"), ("bread", "the oven")]
    tok = scorer.tokenizer
    with torch.no_grad():
        batch = {k: torch.from_numpy(v) for k, v in tok.pad(tok.encode_pairs(pairs)).items()}
        logits = hf(**batch).logits
    expected = logits[:, 0] if num_labels == 1 else logits[:, 1] - logits[:, 0]
    np.testing.assert_allclose(scorer.score(pairs), expected.numpy(), atol=1e-5)


def _write_config(folder: Path, **config) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_load_teacher_bad_directories(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="teacher directory not found"):
        load_teacher(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither a twinbert-search teacher"):
        load_teacher(tmp_path / "empty")
    with pytest.raises(ModelError, match="not a sequence-classification checkpoint"):
        load_teacher(tiny_checkpoint)
    gpt = _write_config(
        tmp_path / "gpt", model_type="gpt2", architectures=["GPT2ForSequenceClassification"]
    )
    with pytest.raises(ModelError, match="'gpt2' is not BERT-like") as info:
        load_teacher(gpt)
    assert "\n" not in str(info.value)


def test_train_teacher_rejects_bad_checkpoints(
    beir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        _train(beir, tmp_path / "missing", tmp_path / "out")
    gpt = _write_config(tmp_path / "gpt", model_type="gpt2")
    with pytest.raises(ModelError, match="not BERT-like"):
        _train(beir, gpt, tmp_path / "out")
    with pytest.raises(ConfigurationError, match="pooling"):
        _train(beir, tiny_checkpoint, tmp_path / "out", pooling="weighted")


def test_train_teacher_rejects_bad_data(tiny_checkpoint: Path, tmp_path: Path) -> None:
    unknown = write_tiny_beir(tmp_path / "unknown", train=[*TRAIN, ("q2", "d99", 1)])
    with pytest.raises(InputError, match="corpus id 'd99' of query 'q2' not found") as info:
        _train(unknown, tiny_checkpoint, tmp_path / "out")
    assert "train.tsv" in str(info.value) and "\n" not in str(info.value)
    empty = write_tiny_beir(tmp_path / "empty", docs={**DOCS, "d5": ("", "   ")})
    with pytest.raises(InputError, match="text is empty"):
        _train(empty, tiny_checkpoint, tmp_path / "out")
    with pytest.raises(InputError, match="data directory not found"):
        _train(tmp_path / "nowhere", tiny_checkpoint, tmp_path / "out")


def test_train_teacher_resumes_after_interruption(
    beir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "teacher"

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(beir, tiny_checkpoint, out, on_step=stop_at_3)
    assert load_checkpoint(out / CHECKPOINT_DIR)["step"] == 2
    assert (out / TEACHER_FILE).is_file()  # best so far, from the evaluation at step 2

    seen: list[int] = []
    _train(beir, tiny_checkpoint, out, on_step=lambda step, loss: seen.append(step))
    assert seen == [3, 4]
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3, 4]
    assert log["best"]["step"] in (2, 4)
    meta = json.loads((out / TEACHER_FILE).read_text())
    assert set(meta["training"]["validation"]) == {"bm25", "teacher"}
    assert load_teacher(out).score([("the star", "star light")]).shape == (1,)

    # Same weights as a run that was never interrupted.
    _train(beir, tiny_checkpoint, tmp_path / "straight")
    a = load_checkpoint(out / CHECKPOINT_DIR)["model"]
    b = load_checkpoint(tmp_path / "straight" / CHECKPOINT_DIR)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # A finished run reruns as a no-op; other settings refuse to resume.
    seen.clear()
    _train(beir, tiny_checkpoint, out, on_step=lambda step, loss: seen.append(step))
    assert seen == []
    with pytest.raises(ConfigurationError, match="holds a run with lr="):
        _train(beir, tiny_checkpoint, out, lr=1e-3)
