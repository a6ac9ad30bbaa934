"""Training data, the teacher score cache, and distillation: loss, resume, export, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_teacher import DOCS, TRAIN, save_toy_teacher, write_tiny_beir
from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError, ModelError
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.args import DistillArgs
from twinbert_search.training.data import (
    CHECKPOINT_DIR,
    TrainingQuery,
    batch_indices,
    build_bm25,
    load_checkpoint,
    load_training_data,
    mine_queries,
    pseudo_queries,
    sample_group,
    split_validation,
)
from twinbert_search.training.distill import REPORT_FILE, TeacherScoreCache, distill
from twinbert_search.training.losses import soft_cross_entropy
from twinbert_search.training.modeling import TwinBert, TwinBertConfig
from twinbert_search.training.teacher import load_teacher
from twinbert_search.training.tokenizer import torch_batch


def _distill(data: Path, teacher: Path, out: Path, on_step=None, **options) -> Path:
    """`distill` with the arguments as keywords, as the tests spell them."""
    return distill(DistillArgs(data, teacher, out, **options), on_step=on_step)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir"))


@pytest.fixture(scope="module")
def teacher_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_toy_teacher(tiny_checkpoint, tmp_path_factory.mktemp("teacher"), scale=1.0)


# --- data -----------------------------------------------------------------------------------


def test_training_data_positives_and_hard_negatives(beir: Path) -> None:
    data = load_training_data(beir)
    assert data.labelled_query_ids() == ["q1", "q2", "q3", "q4"]
    assert data.positives("q1") == ("d1", "d3")
    [q1] = mine_queries(data, ["q1"], build_bm25(data.corpus), depth=5)
    assert q1.bm25 and set(q1.hard_negatives).isdisjoint({"d1", "d3"})
    assert q1.bm25[0] in ("d1", "d3")  # BM25 finds the star documents


def test_split_validation_is_seeded_and_disjoint() -> None:
    ids = [f"q{i}" for i in range(40)]
    train, val = split_validation(ids, fraction=0.25, max_queries=6, seed=1)
    assert len(val) == 6 and not set(train) & set(val) and len(train) + len(val) == 40
    assert split_validation(ids, fraction=0.25, max_queries=6, seed=1) == (train, val)
    assert split_validation(ids, fraction=0.25, max_queries=6, seed=2)[1] != val
    assert split_validation(["only"], seed=0) == (["only"], [])


def test_batch_indices_cover_each_epoch_and_do_not_need_history() -> None:
    first_epoch = [i for step in range(3) for i in batch_indices(6, 2, step, seed=0)]
    assert sorted(first_epoch) == list(range(6))
    assert batch_indices(6, 4, 1, seed=0) == batch_indices(6, 4, 1, seed=0)
    assert len(batch_indices(3, 7, 0, seed=0)) == 7  # a batch larger than the data wraps


def test_sample_group_never_uses_a_positive_as_negative() -> None:
    query = TrainingQuery("q", "text", ("a",), ("b", "a", "c"))
    corpus_ids = ["a", "b", "c", "d", "e"]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        positive, negatives = sample_group(query, 3, rng, corpus_ids)
        assert positive == "a" and "a" not in negatives
        assert len(negatives) == 3 and len(set(negatives)) == 3
        assert {"b", "c"} <= set(negatives)  # hard negatives first, random fill after


def test_pseudo_queries_come_from_their_own_document(beir: Path) -> None:
    data = load_training_data(beir)
    index = build_bm25(data.corpus)
    made = pseudo_queries(data.corpus, 4, index, depth=5, seed=0)
    assert len(made) == 4 and all(q.pseudo for q in made)
    for q in made:
        [source] = q.positives
        doc = data.corpus[source]
        assert q.id == f"pseudo:{source}"
        assert q.text == doc.title or (q.text in doc.text and q.text != doc.text)
    again = pseudo_queries(data.corpus, 4, index, depth=5, seed=0)
    assert [q.text for q in again] == [q.text for q in made]


def test_load_training_data_rejects_unknown_ids(tmp_path: Path) -> None:
    folder = write_tiny_beir(tmp_path, train=[*TRAIN, ("q1", "nope", 1)])
    with pytest.raises(InputError, match="corpus id 'nope'"):
        load_training_data(folder)
    folder2 = write_tiny_beir(tmp_path / "b", train=[("q1", "d1", 0)])
    with pytest.raises(InputError, match="no query has a relevant document"):
        load_training_data(folder2)


# --- cache ----------------------------------------------------------------------------------


def test_teacher_score_cache_round_trip(tmp_path: Path) -> None:
    cache = TeacherScoreCache(tmp_path)
    doc = Document("d1", "text")
    k1 = cache.key("teacher-a", "query", "d1", doc.content_hash)
    k2 = cache.key("teacher-b", "query", "d1", doc.content_hash)
    k3 = cache.key("teacher-a", "query", "d1", Document("d1", "edited").content_hash)
    assert len({k1, k2, k3}) == 3
    cache.update([k1, k2], [1.5, -2.0])
    cache.flush()
    reread = TeacherScoreCache(tmp_path)
    assert len(reread) == 2 and k3 not in reread
    np.testing.assert_array_equal(reread.get_many([k2, k1]), np.array([-2.0, 1.5], np.float32))


# --- distillation ---------------------------------------------------------------------------


def _student_loss(model: TwinBert, tok_file: Path, pairs, teacher_logits) -> float:
    q_tok = TextTokenizer.from_file(tok_file, model.manifest.max_query_length)
    d_tok = TextTokenizer.from_file(tok_file, model.manifest.max_doc_length)
    model.eval()
    with torch.no_grad():
        q = model.encode_queries(torch_batch(q_tok, [p[0] for p in pairs]))
        d = model.encode_documents(torch_batch(d_tok, [p[1] for p in pairs]))
        logits = model.crossing(q, d)
    return float(soft_cross_entropy(logits, torch.from_numpy(teacher_logits)))


def test_distillation_lowers_the_loss_against_a_toy_teacher(
    beir: Path, teacher_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    config = TwinBertConfig(pooling="mean", max_query_length=16, max_doc_length=32)
    data = load_training_data(beir)
    pairs = [
        (data.queries[q].text, data.corpus[d].encoding_text)
        for q in data.labelled_query_ids()
        for d in DOCS
    ]
    teacher_logits = load_teacher(teacher_dir).score(pairs)
    torch.manual_seed(0)
    before = _student_loss(
        TwinBert.from_checkpoint(tiny_checkpoint, config),
        tiny_checkpoint / "tokenizer.json",
        pairs,
        teacher_logits,
    )
    out = _distill(
        beir,
        teacher_dir,
        tmp_path / "student",
        student_checkpoint=tiny_checkpoint,
        config=config,
        steps=8,
        batch_size=4,
        candidates_per_query=6,
        lr=1e-3,
        crossing_lr=5e-2,
        seed=0,
        int8=False,
        progress=False,
    )
    after = _student_loss(TwinBert.load(out), out / "tokenizer.json", pairs, teacher_logits)
    assert after < before, (before, after)
    report = json.loads((out / REPORT_FILE).read_text())
    assert [h["step"] for h in report["history"]] == list(range(1, 9))
    assert report["export"][0].startswith("query_encoder fp32 max |diff|")
    manifest = ModelManifest.load(out)
    assert manifest.onnx["query_encoder"] == "onnx/query_encoder.onnx"
    assert manifest.extra["distillation"]["loss"] == "soft_ce"
    assert manifest.extra["distillation"]["calibration"] is None  # BCE anchors the logits


def test_interrupted_distillation_resumes_to_the_same_model(
    beir: Path, teacher_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    config = TwinBertConfig(
        pooling="weighted",
        max_query_length=16,
        max_doc_length=32,
        crossing=CrossingConfig("residual", "concat", 16),
    )
    options = dict(
        student_checkpoint=tiny_checkpoint,
        config=config,
        steps=4,
        batch_size=3,
        candidates_per_query=3,
        loss="margin_mse",
        pseudo_queries=3,
        recall_loss_weight=0.5,
        label_weight=0.5,
        checkpoint_every=2,
        seed=5,
        int8=True,
        progress=False,
    )
    out = tmp_path / "resumed"

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _distill(beir, teacher_dir, out, on_step=stop_at_3, **options)
    assert load_checkpoint(out / CHECKPOINT_DIR)["step"] == 2
    cache_file = out / "cache" / TeacherScoreCache.FILE
    cached_at = cache_file.stat().st_mtime_ns
    assert len(TeacherScoreCache(out / "cache")) > 0

    seen: list[int] = []
    _distill(beir, teacher_dir, out, on_step=lambda s, loss: seen.append(s), **options)
    assert seen == [3, 4]
    assert cache_file.stat().st_mtime_ns == cached_at  # every score came from the cache
    history = json.loads((out / REPORT_FILE).read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert {"margin_mse", "recall", "labels", "total"} <= set(history[-1])
    last = history[-1]
    assert last["total"] == pytest.approx(
        last["margin_mse"] + 0.5 * last["recall"] + 0.5 * last["labels"], rel=1e-5
    )
    manifest = ModelManifest.load(out)
    assert "query_encoder_int8" in manifest.onnx
    # margin_mse leaves the logits' level free: the crossing is Platt-scaled after training
    calibration = manifest.extra["distillation"]["calibration"]
    assert calibration["a"] > 0 and calibration["pairs"] > 0

    straight = _distill(beir, teacher_dir, tmp_path / "straight", **options)
    assert ModelManifest.load(straight).fingerprint == manifest.fingerprint

    with pytest.raises(ConfigurationError, match="holds a run with temperature="):
        _distill(beir, teacher_dir, out, **{**options, "temperature": 2.0})


def test_distill_shares_a_cache_directory(
    beir: Path, teacher_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    options = dict(
        student_checkpoint=tiny_checkpoint,
        config=TwinBertConfig(max_query_length=16, max_doc_length=32),
        steps=2,
        batch_size=2,
        candidates_per_query=2,
        cache_dir=tmp_path / "cache",
        int8=False,
        progress=False,
    )
    _distill(beir, teacher_dir, tmp_path / "a", **options)
    cache_file = tmp_path / "cache" / TeacherScoreCache.FILE
    stamp = cache_file.stat().st_mtime_ns
    _distill(beir, teacher_dir, tmp_path / "b", **options)
    assert cache_file.stat().st_mtime_ns == stamp


def test_distill_bad_input_fails_fast(
    beir: Path, teacher_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    options = dict(student_checkpoint=tiny_checkpoint, steps=1, progress=False)
    with pytest.raises(ModelError, match="teacher directory not found"):
        _distill(beir, tmp_path / "no-teacher", tmp_path / "out", **options)
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        _distill(beir, teacher_dir, tmp_path / "out", **{**options, "student_checkpoint": "nope"})
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelError, match="not BERT-like"):
        _distill(
            beir,
            teacher_dir,
            tmp_path / "out",
            **{**options, "student_checkpoint": tmp_path / "gpt"},
        )
    bad = write_tiny_beir(tmp_path / "bad", train=[("q1", "d404", 1)])
    with pytest.raises(InputError, match="d404"):
        _distill(bad, teacher_dir, tmp_path / "out", **options)
    with pytest.raises(ConfigurationError, match="loss must be one of"):
        _distill(beir, teacher_dir, tmp_path / "out", **{**options, "loss": "kl"})
    assert not (tmp_path / "out").exists()


def test_arguments_name_the_invalid_field() -> None:
    """Each entry point's arguments refuse a bad value before reading anything."""
    from twinbert_search.training.args import AdaptArgs, TeacherArgs

    with pytest.raises(ConfigurationError, match="crossing_lr must be positive"):
        DistillArgs("data", "teacher", "out", crossing_lr=0).validate()
    with pytest.raises(ConfigurationError, match="recall_loss_weight must not be negative"):
        DistillArgs("data", "teacher", "out", recall_loss_weight=-1).validate()
    with pytest.raises(ConfigurationError, match="max_length must be at least 8"):
        TeacherArgs("data", "out", max_length=4).validate()
    assert TeacherArgs("data", "out", checkpoint_every=0).validate().save_every == 200
    with pytest.raises(ConfigurationError, match="candidates must be at least 2"):
        AdaptArgs("corpus", "model", "out", teacher="t", candidates=1).validate()
    with pytest.raises(ConfigurationError, match="checkpoint_every must be positive"):
        AdaptArgs("corpus", "model", "out", teacher="t", checkpoint_every=0).validate()
