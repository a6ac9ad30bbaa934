"""`adapt`: a student adapted to a corpus from its text alone, resumable, with any teacher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import build_tiny_model
from tests.training.test_teacher import DOCS, save_toy_teacher
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.training.adapt import adapt
from twinbert_search.training.args import AdaptArgs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BEIR documents, one of them a title with an empty text (as in CACM)."""
    folder = tmp_path_factory.mktemp("corpus")
    with open(folder / "corpus.jsonl", "w") as fh:
        for doc_id, (title, text) in DOCS.items():
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
        fh.write(json.dumps({"_id": "t1", "title": "Telescope optics for stars", "text": ""}))
    return folder


@pytest.fixture(scope="module")
def student(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny residual/mul TwinBERT with shared towers (as the default model has)."""
    folder = tmp_path_factory.mktemp("student")
    return build_tiny_model(
        tiny_checkpoint, folder, pooling="mean", crossing=CrossingConfig("residual", "mul", 8)
    )


@pytest.fixture(scope="module")
def teacher(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_toy_teacher(tiny_checkpoint, tmp_path_factory.mktemp("teacher"), scale=3.0)


def _adapt(corpus: Path, student: Path, out: Path, teacher: Path, **kwargs):
    options = dict(pseudo_queries=8, candidates=4, steps=4, batch_size=2, progress=False)
    options.update(kwargs)
    on_step = options.pop("on_step", None)
    return adapt(AdaptArgs(corpus, student, out, teacher=teacher, **options), on_step=on_step)


def _crossing(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "crossing" / "model.safetensors"))


def test_adapt_trains_the_query_tower_behind_the_original_index(
    corpus: Path, student: Path, teacher: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapted"
    report = _adapt(corpus, student, out, teacher, checkpoint_every=2)
    assert report.documents == len(DOCS) + 1 and sum(report.pseudo_queries.values()) == 8
    assert report.pairs == 8 * 4 and report.pairs_scored_now == report.pairs
    assert report.steps == 4 and report.loss_first is not None
    summary = "\n".join(report.lines())
    assert "pseudo-queries: 8 (" in summary and "4 hybrid-recall candidates each" in summary
    assert "document tower frozen" in summary
    # The document tower stayed the original's: an index of the original serves the adapted
    # model; the query tower and the crossing learned.
    original = ModelManifest.load(student)
    adapted = ModelManifest.load(out)
    assert adapted.document_fingerprint == original.fingerprint != adapted.fingerprint
    assert not adapted.shared_towers
    assert TwinBertRuntime.load(out).fingerprint == TwinBertRuntime.load(student).fingerprint
    assert adapted.extra["adaptation"]["pairs"] == report.pairs
    changed = [
        not torch.equal(a, b)
        for a, b in zip(_crossing(student).values(), _crossing(out).values(), strict=True)
    ]
    assert any(changed)
    # A rerun is served from the caches and the finished checkpoint.
    again = _adapt(corpus, student, out, teacher, checkpoint_every=2)
    assert again.pairs_scored_now == 0 and again.resumed_at == 4


def test_an_interrupted_adaptation_resumes_to_the_same_weights(
    corpus: Path, student: Path, teacher: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    _adapt(corpus, student, whole, teacher, checkpoint_every=1)

    def stop(step: int, _loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _adapt(corpus, student, cut, teacher, checkpoint_every=1, on_step=stop)
    report = _adapt(corpus, student, cut, teacher, checkpoint_every=1)
    assert report.resumed_at == 2
    for name, value in _crossing(whole).items():
        torch.testing.assert_close(_crossing(cut)[name], value)


def test_a_hugging_face_sequence_classifier_is_a_teacher(
    corpus: Path, student: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(str(tiny_checkpoint), num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(tmp_path / "hf"))
    shutil.copy(tiny_checkpoint / "tokenizer.json", tmp_path / "hf" / "tokenizer.json")
    report = _adapt(corpus, student, tmp_path / "out", tmp_path / "hf")
    assert report.teacher == str(tmp_path / "hf") and report.pairs_scored_now == report.pairs
    assert (tmp_path / "out" / "onnx" / "query_encoder.onnx").is_file()


def test_learning_the_document_tower_asks_for_an_index_of_its_own(
    corpus: Path, student: Path, teacher: Path, tmp_path: Path
) -> None:
    report = _adapt(corpus, student, tmp_path / "full", teacher, learn_documents=True)
    adapted = ModelManifest.load(tmp_path / "full")
    assert adapted.document_fingerprint == "" and adapted.shared_towers
    assert TwinBertRuntime.load(tmp_path / "full").fingerprint != (
        TwinBertRuntime.load(student).fingerprint
    )
    assert "index the corpus again" in "\n".join(report.lines())


def test_the_command_ends_with_its_summary(
    corpus: Path, student: Path, teacher: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from twinbert_search.cli.adapt import adapt as adapt_command

    args = [str(corpus), "--model", str(student), "--out", str(tmp_path / "cli")]
    args += ["--teacher", str(teacher), "--pseudo-queries", "4", "--candidates", "3"]
    args += ["--steps", "2", "--batch-size", "2", "--no-progress"]
    result = CliRunner().invoke(adapt_command, args)
    assert result.exit_code == 0, result.output
    assert "pseudo-queries: 4 (" in result.output and "training: 2 steps" in result.output
    again = CliRunner().invoke(adapt_command, [*args, "--json"])
    assert json.loads(again.output)["pairs_scored_now"] == 0


def test_the_ensemble_a_teacher_directory_records_is_what_is_distilled(
    corpus: Path, student: Path, teacher: Path, tmp_path: Path
) -> None:
    ensemble = tmp_path / "teacher"
    shutil.copytree(teacher, ensemble)
    weights = {"ce": 1.0, "bm25": 0.5, "dense": 0.25}
    (ensemble / "ensemble.json").write_text(
        json.dumps({"weights": weights, "ce_stats": [0.0, 2.0]})
    )
    fused = _adapt(corpus, student, tmp_path / "fused", ensemble)
    assert "(ensemble: 1 ce, 0.5 bm25, 0.25 dense)" in fused.teacher
    config = ModelManifest.load(tmp_path / "fused").extra["adaptation"]["config"]
    assert config["teacher_fusion"]["weights"] == weights
    alone = _adapt(corpus, student, tmp_path / "alone", ensemble, use_teacher_fusion=False)
    assert alone.teacher == str(ensemble)
    assert not torch.equal(
        _crossing(tmp_path / "fused")["out.weight"], _crossing(tmp_path / "alone")["out.weight"]
    )


def test_a_tower_teacher_needs_no_cross_encoder(
    corpus: Path, student: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from twinbert_search.training.tower_teacher import TowerSpec, TowerTeacher

    towers = TowerTeacher((TowerSpec(str(tiny_model), 2.0),), bm25=1.0, dense=0.0)
    folder = towers.save(tmp_path / "towers")
    report = _adapt(corpus, student, tmp_path / "out", folder, checkpoint_every=2)
    assert report.teacher.endswith(f"(towers: 1 bm25, 2 {tiny_model.name})")
    assert report.pairs_scored_now == report.pairs == 8 * 4
    config = ModelManifest.load(tmp_path / "out").extra["adaptation"]["config"]
    assert config["teacher_fusion"]["kind"] == "towers"
    before, after = _crossing(student), _crossing(tmp_path / "out")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    again = _adapt(corpus, student, tmp_path / "out", folder, checkpoint_every=2)
    assert again.pairs_scored_now == 0 and again.resumed_at == 4
    with pytest.raises(ConfigurationError, match=r"--teacher-alone: .* is a tower teacher"):
        _adapt(corpus, student, tmp_path / "alone", folder, use_teacher_fusion=False)


def test_pseudo_query_candidates_are_fused_as_the_model_is_served(
    corpus: Path, student: Path
) -> None:
    import numpy as np

    from twinbert_search.search.fusion import HYBRID_MANIFEST_KEY, HybridFusion
    from twinbert_search.training.adapt import _candidate_lists
    from twinbert_search.training.corpus import read_documents
    from twinbert_search.training.data import build_bm25

    runtime = TwinBertRuntime.load(student)
    docs = read_documents(corpus)
    ids = sorted(docs)
    vectors = runtime.encode_documents([docs[d].encoding_text for d in ids])
    text = "the star light of the sun"
    q = runtime.encode_queries([text])[0]
    sims = vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    lexical = build_bm25({d: docs[d] for d in ids}).scores(text)
    dense = [ids[r] for r in np.argsort(-sims, kind="stable")[:6]]
    sparse = [ids[r] for r in np.argsort(-lexical, kind="stable")[:6] if lexical[r] > 0]
    orders = {}
    for method, bm25 in (("zscore", 1.0), ("rrf", 1.0), ("zscore", 4.0)):
        fusion = HybridFusion(method, bm25=bm25)
        runtime.manifest.extra[HYBRID_MANIFEST_KEY] = fusion.to_dict()
        [item] = _candidate_lists(runtime, docs, ids, vectors, [text], ["d9"], 6)
        by_hand = fusion.fuse(
            (dense, [float(sims[ids.index(d)]) for d in dense]),
            (sparse, [float(lexical[ids.index(d)]) for d in sparse]),
        )
        expected = ["d9", *[d for d, _ in by_hand if d != "d9"]][:6]
        assert item["docs"] == expected  # the source document first, then the served order
        orders[(method, bm25)] = item["docs"]
    assert len({tuple(o) for o in orders.values()}) > 1  # the fusion matters here
