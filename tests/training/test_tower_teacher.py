"""The tower teacher: z-scored BM25 and towers' cosines, a teacher that needs no labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.training.test_teacher import DOCS
from twinbert_search.cli import main
from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.runtime.fusion import zscore
from twinbert_search.training.tower_teacher import TowerSpec, TowerTeacher


def test_targets_are_the_weighted_sum_of_z_scores_over_the_list() -> None:
    teacher = TowerTeacher((TowerSpec("a", 2.0), TowerSpec("b", 0.0)), bm25=1.0, dense=0.5)
    bm25, cosine = np.array([3.0, 1.0, 0.0]), np.array([0.2, 0.9, 0.1])
    a, b = np.array([0.5, 0.4, 0.9]), np.array([9.0, -9.0, 0.0])
    expected = zscore(bm25) + 0.5 * zscore(cosine) + 2.0 * zscore(a)
    np.testing.assert_allclose(teacher.fused(bm25, cosine, [a, b]), expected, rtol=1e-6)
    # Only the order within a list and the gaps matter: a tower's scale does not.
    np.testing.assert_allclose(
        teacher.fused(bm25, cosine, [10 * a + 3, b]), expected, rtol=1e-5, atol=1e-6
    )
    assert teacher.describe() == "1 bm25, 0.5 dense, 2 a"


def test_the_directory_round_trips_and_a_cross_encoders_is_not_one(tmp_path: Path) -> None:
    teacher = TowerTeacher((TowerSpec(str(tmp_path / "bge"), 2.0, str(tmp_path / "ix")),), 2.0)
    teacher.save(tmp_path / "t")
    assert TowerTeacher.load(tmp_path / "t") == teacher
    ce = tmp_path / "ce"
    ce.mkdir()
    (ce / "ensemble.json").write_text(json.dumps({"weights": {"ce": 1.0}, "ce_stats": [0, 1]}))
    assert TowerTeacher.load(ce) is None and TowerTeacher.load(tmp_path) is None


@pytest.mark.parametrize("weights", [{"bm25": -1.0}, {"dense": float("nan")}])
def test_a_negative_or_nan_weight_is_refused(weights: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="teacher weight of"):
        TowerTeacher((TowerSpec("a", 1.0),), **weights)
    with pytest.raises(ConfigurationError, match="needs a tower"):
        TowerTeacher((), bm25=0.0, dense=0.0)


def test_tower_cosines_are_the_towers_own_and_a_rerun_encodes_nothing(
    tiny_model: Path, tmp_path: Path
) -> None:
    docs = {d: Document(d, text, title) for d, (title, text) in DOCS.items()}
    ids = sorted(docs)
    lists = [{"docs": ["d1", "d3", "d9"]}, {"docs": ["d4", "d5"]}]
    texts = ["star telescope", "bread sugar"]
    teacher = TowerTeacher((TowerSpec(str(tiny_model), 1.0),))
    cosines, fingerprint, fresh = teacher.tower_cosines(
        docs, ids, texts, lists, tmp_path, progress=False
    )
    assert fresh == 5 and [len(c[0]) for c in cosines] == [3, 2]
    runtime = TwinBertRuntime.load(tiny_model)
    q = runtime.encode_queries(texts)
    for i, item in enumerate(lists):
        d = runtime.encode_documents([docs[x].encoding_text for x in item["docs"]])
        expected = d @ q[i] / (np.linalg.norm(d, axis=1) * np.linalg.norm(q[i]))
        np.testing.assert_allclose(cosines[i][0], expected, rtol=1e-4, atol=1e-5)
    again, same, fresh = teacher.tower_cosines(docs, ids, texts, lists, tmp_path, progress=False)
    assert fresh == 0 and same == fingerprint
    np.testing.assert_array_equal(again[0][0], cosines[0][0])
    reweighed = TowerTeacher((TowerSpec(str(tiny_model), 2.0),))
    assert reweighed.tower_cosines(docs, ids, texts, lists, tmp_path, False)[1] != fingerprint


def test_the_command_writes_the_teacher_and_names_a_bad_tower(
    tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "teacher"
    args = ["teacher", "towers", "--out", str(out), "--tower", f"{tiny_model}=2"]
    args += ["--tower-index", f"{tiny_model}={tmp_path / 'ix'}", "--bm25-weight", "0.5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "(0.5 bm25, 1 dense, 2 " in result.output
    loaded = TowerTeacher.load(out)
    assert loaded is not None and loaded.towers[0].weight == 2.0
    assert loaded.towers[0].index_dir == str((tmp_path / "ix").resolve())
    for bad, says in [
        (["--tower", str(tmp_path)], "not a model directory"),
        (["--tower", f"{tiny_model}=heavy"], "is not a number"),
        (["--tower-index", f"{tmp_path}=ix"], "no --tower of that model"),
    ]:
        result = CliRunner().invoke(main, ["teacher", "towers", "--out", str(out), *bad])
        assert result.exit_code != 0 and says in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_pair_scorer_refuses_a_tower_teacher_and_says_where_it_goes(tmp_path: Path) -> None:
    from twinbert_search.errors import ModelError
    from twinbert_search.training.teacher_onnx import load_pair_scorer

    TowerTeacher((TowerSpec("bge", 1.0),)).save(tmp_path / "towers")
    with pytest.raises(ModelError, match=r"tower teacher .* use it with `adapt --teacher`"):
        load_pair_scorer(tmp_path / "towers")


def test_tuning_picks_the_signal_that_ranks_the_labelled_lists() -> None:
    """The tower orders each list perfectly, BM25 backwards: the grid's first perfect
    combination, the tower alone, is chosen, and every scale-free combination is scored once."""
    from twinbert_search.training.tower_teacher import tune_weights

    docs = [f"d{i}" for i in range(6)]
    lists, cosines, qrels = [], [], {}
    for q, positive in (("q1", "d4"), ("q2", "d1")):
        tower = np.array([1.0 if d == positive else 0.1 * i for i, d in enumerate(docs)])
        lists.append({"query_id": q, "docs": docs, "bm25": -tower, "cosine": np.linspace(1, 0, 6)})
        cosines.append([tower])
        qrels[q] = {positive: 1}
    given = TowerTeacher((TowerSpec("bge", 2.0, "ix"),), bm25=2.0, dense=1.0)
    best, rows = tune_weights(given, lists, cosines, qrels)
    assert (best.bm25, best.dense, best.towers) == (0.0, 0.0, (TowerSpec("bge", 1.0, "ix"),))
    assert len(rows) == 37 and max(r["ndcg@10"] for r in rows) == 1.0
    assert len({r["weights"] for r in rows}) == 37


def test_the_command_tunes_on_labelled_queries_and_keeps_the_choice(
    tiny_model: Path, tmp_path: Path
) -> None:
    from tests.service.test_service import SAMPLE, build_sample_index

    index = build_sample_index(tiny_model, tmp_path / "ix")
    out = tmp_path / "teacher"
    args = ["teacher", "towers", "--out", str(out), "--tower", f"{tiny_model}=2"]
    args += ["--bm25-weight", "2", "--model", str(tiny_model), "--no-progress"]
    tune = ["--tune-data", str(SAMPLE), "--tune-qrels", str(SAMPLE / "qrels" / "test.tsv")]
    result = CliRunner().invoke(main, [*args, *tune, "--tune-index", str(index), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: tuning on" in result.stderr  # the sample's qrels are its test split
    tuning = json.loads(result.stdout)["tuning"]
    assert len(tuning["grid"]) == 37 and tuning["queries"] > 0
    assert tuning["ndcg@10"] == max(r["ndcg@10"] for r in tuning["grid"])
    assert tuning["ndcg@10"] >= tuning["given"]["ndcg@10"]
    assert tuning["given"]["weights"] == f"2 bm25, 1 dense, 2 {tiny_model.name}"
    saved = TowerTeacher.load(out)
    assert saved is not None and saved.describe() == tuning["chosen"]
    assert json.loads((out / "tuning.json").read_text())["chosen"] == tuning["chosen"]
    half = CliRunner().invoke(main, [*args, *tune])
    assert half.exit_code != 0 and "tuning needs --tune-data, --tune-qrels and --tune-index" in (
        half.output
    )


@pytest.mark.parametrize(
    "body, says",
    [
        ("{not json", "not JSON"),
        ('{"kind": "towers", "towers": [{"weight": 1}]}', "towers of {model, weight}"),
        ('{"kind": "towers", "weights": {"bm25": "lots"}, "towers": []}', "numeric weights"),
    ],
)
def test_a_broken_teacher_file_names_itself(tmp_path: Path, body: str, says: str) -> None:
    (tmp_path / "ensemble.json").write_text(body)
    with pytest.raises(ConfigurationError, match=r"ensemble\.json: ") as caught:
        TowerTeacher.load(tmp_path)
    assert says in str(caught.value)
