"""The recipe chain on a tiny BERT and a tiny BEIR folder: every step, resume, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import build_tiny_model
from tests.training.test_teacher import write_tiny_beir
from twinbert_search.cli.recipe import recipe
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.search.fusion import hybrid_fusion_of
from twinbert_search.training.fusion import RULE
from twinbert_search.training.recipe import (
    STATE_FILE,
    STEP_NAMES,
    RecipeConfig,
    StudentSpec,
    explore_teachers,
    run_recipe,
    student_loss,
)


@pytest.fixture(scope="module")
def base_model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cosine TwinBERT: the recipe's base model (its towers are the frozen doc tower)."""
    folder = tmp_path_factory.mktemp("base")
    return build_tiny_model(tiny_checkpoint, folder, pooling="mean", crossing=CrossingConfig())


def _ood(folder: Path) -> Path:
    """A second tiny collection, one document a title with an empty text (as in CACM)."""
    docs = {
        "c1": ("sorting networks", "parallel sorting of the keys. a network of comparators."),
        "c2": ("compilers", "the compiler parses the code. code and data of the program."),
        "c3": ("Storage allocation in recursive procedures", ""),
        "c4": ("queues", "the queue and the stack. a list of the jobs in the memory."),
    }
    write_tiny_beir(folder, docs=docs, train=[])
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq4\tc2\t1\n")
    return folder


def _config(tmp_path: Path, base_model: Path, checkpoint: Path) -> RecipeConfig:
    return RecipeConfig(
        data=str(write_tiny_beir(tmp_path / "beir")),
        ood_data=str(_ood(tmp_path / "ood")),
        adapt_pseudo_queries=4,
        adapt_candidates=3,
        adapt_steps=2,
        out=str(tmp_path / "run"),
        base_model=str(base_model),
        checkpoint=str(checkpoint),
        teacher_steps=2,
        teacher_eval_every=1,
        teacher_queries_per_step=2,
        teacher_group=4,
        pseudo_queries=3,
        distill_candidates=4,
        pseudo_candidates=3,
        student_steps=3,
        student_batch=2,
        max_query_length=16,
        teacher_int8=False,
        teacher_pseudo_queries=3,
        teacher_warm_steps=1,
        teacher_pseudo_labels=True,
        students=[
            StudentSpec("twinbert-res", "residual", "mul", 1, "weighted", hidden=8, label_weight=1),
            StudentSpec("twinbert-cos", "cosine"),
        ],
    )


@pytest.fixture(scope="module")
def finished(
    base_model: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RecipeConfig, list[str]]:
    """One recipe run, interrupted after the teacher and resumed to the end."""
    cfg = _config(tmp_path_factory.mktemp("recipe"), base_model, tiny_checkpoint)
    ran: list[str] = []
    run_recipe(cfg, until="teacher", on_step=lambda name, _: ran.append(name))
    assert ran == ["index", "candidates", "teacher"]
    run_recipe(cfg, on_step=lambda name, _: ran.append(name))
    return cfg, ran


def test_recipe_runs_every_step_and_resumes(
    finished: tuple[RecipeConfig, list[str]], base_model: Path
) -> None:
    cfg, ran = finished
    assert ran == list(STEP_NAMES)
    state = json.loads((Path(cfg.out) / STATE_FILE).read_text())
    assert set(state["steps"]) == set(STEP_NAMES)
    assert all(s["seconds"] >= 0 for s in state["steps"].values())
    # The teacher's pseudo-queries have hybrid lists, feed a regression warm start, then
    # join the label phase; validation and test queries are flagged by overlap.
    assert state["steps"]["candidates"]["result"]["queries"]["tpseudo"] == 3
    teacher = state["steps"]["teacher"]["result"]
    assert teacher["pseudo_queries"] == 3 and len(teacher["warm"]["history"]) == 1
    assert len(teacher["history"]) == cfg.teacher_steps
    queries = json.loads((Path(cfg.out) / "work" / "queries.json").read_text())["queries"]
    assert all(isinstance(q["overlap"], bool) for q in queries if q["split"] in ("val", "test"))

    out = Path(cfg.out)
    results = json.loads((out / "results.json").read_text())
    systems = [r["system"] for r in results["rows"]]
    assert systems[0] == "BM25" and any(s.startswith("teacher reranking") for s in systems)
    assert any(s.startswith("twinbert-res reranking top 1000") for s in systems)
    for row in results["rows"]:
        assert 0.0 <= row["ndcg@10"] <= 1.0
    # Students keep the base model's document tower, so the base index serves them.
    assert all(results["students_served_from_base_index"].values())
    base = ModelManifest.load(base_model)
    student = ModelManifest.load(out / "twinbert-res")
    assert not student.shared_towers and student.num_layers == 1
    assert student.document_fingerprint == base.fingerprint != student.fingerprint
    assert student.crossing.hidden == 8 and not student.crossing.output_relu
    # Platt-scaled after training (listwise losses leave the logits' level free).
    calibration = student.extra["distillation"]["calibration"]
    assert calibration["a"] > 0 and calibration["pairs"] > 0

    # Teacher vs students on the same queries: means, medians and cold calls, and the
    # students' int8 query graphs (exported by the recipe) timed too.
    paired = results["paired_timing"]
    names = {"twinbert-res", "twinbert-cos"}
    names |= {f"{n} (int8 query graph)" for n in names}
    assert set(paired["speedup"]) == set(paired["speedup_p50"]) == names
    assert all(paired["p50_ms_per_query"][n] > 0 for n in names)
    assert set(paired["cold_ms_per_call"]) == names | {"teacher"}

    # Served: each student's own query vector recalls (hybrid) and reranks; the teacher
    # reranks the same list, from scores that cover every pair it needs.
    for name in ("twinbert-res", "twinbert-cos"):
        recall_rows = [s for s in systems if s.startswith(f"recall: hybrid with {name}'s query v")]
        fused_by = hybrid_fusion_of(ModelManifest.load(out / name).extra).describe()
        assert (
            f"recall: hybrid with {name}'s query vector ({fused_by} of its kNN and BM25, "
            f"top {cfg.rerank_depth} fused {cfg.rerank_depth} deep)"
        ) in recall_rows
        assert f"teacher reranking top {cfg.rerank_depth} of {name}'s recall" in systems
        assert f"{name} reranking top {cfg.rerank_depth} of its own recall" in systems
        timing = results["served_timing"][name]
        assert set(timing["speedup"]) == {"crossing", "query tower + crossing"}
    # Each student's BM25 weight is tuned on validation and kept in its manifest; a tuned
    # weight adds the fused rows.
    for name in ("twinbert-res", "twinbert-cos"):
        tuned = ModelManifest.load(out / name).extra["lexical_fusion"]
        assert tuned["bm25_weight"] in (0.0, 0.25, 0.5, 1.0, 2.0)
        assert tuned["val_ndcg@10"] == max(tuned["grid"].values())
        fused = f"{name} + BM25 reranking top {cfg.rerank_depth}"
        assert (fused in systems) == (tuned["bm25_weight"] > 0)
    lists = json.loads((out / "work" / "served_recall.json").read_text())
    scored = json.loads((out / "work" / "ce_served_scores.json").read_text())
    for qid, rows in lists["twinbert-res"].items():
        assert len(set(rows)) == len(rows)
        assert set(rows[: cfg.rerank_depth]) <= set(scored[f"test:{qid}"]["rows"])

    # Every row is split by overlap with the training positives; the out-of-domain rows
    # cover every model zero-shot, the adapted student included, with the teacher alone.
    main = [r for r in results["rows"] if r["section"] == "main"]
    assert all(set(r["subsets"]) <= {"overlap", "no_overlap"} for r in main)
    ood = [r["system"] for r in results["rows"] if r["section"] == "ood"]
    assert ood[0] == "BM25" and "recall: hybrid with the default model's query vector" in ood
    for name in (
        "twinbert-res",
        "twinbert-cos",
        "twinbert-res-adapted",
        "twinbert-res-adapted-ood",
    ):
        assert f"{name}: served rerank (search --hybrid), top {cfg.rerank_depth}" in ood
        assert f"teacher alone (cross-encoder) on top {cfg.rerank_depth} of {name}'s recall" in ood
    # Adapted to the run's own corpus and to the out-of-domain one, behind the base index.
    for name in ("twinbert-res-adapted", "twinbert-res-adapted-ood"):
        adapted = ModelManifest.load(out / name)
        assert adapted.document_fingerprint == base.fingerprint
        assert adapted.extra["adaptation"]["steps"] == 2
    assert (
        ModelManifest.load(out / "twinbert-res-adapted").extra["adaptation"]["corpus"] == cfg.data
    )
    # Each student's served fusion is tuned on validation and kept in its manifest.
    for name in ("twinbert-res", "twinbert-cos", "twinbert-res-adapted"):
        tuned = ModelManifest.load(out / name).extra["rerank_fusion"]
        assert tuned["ndcg@10"] >= tuned["recall_ndcg@10"] and tuned["subset"] == "all"
        assert tuned["rule"] == RULE and tuned["p_value"] <= 1
        assert f"{name} served rerank (search --hybrid) of its own recall" in systems

    # Finished: a rerun does nothing; --redo reruns that step and the ones after it.
    again: list[str] = []
    run_recipe(cfg, on_step=lambda name, _: again.append(name))
    assert again == []
    # (with a BM25 weight set on twinbert-res, so the fused rows are built whatever was tuned)
    manifest = ModelManifest.load(out / "twinbert-res")
    manifest.extra["lexical_fusion"] = {"bm25_weight": 1.0}
    manifest.save(out / "twinbert-res")
    run_recipe(cfg, redo=["evaluate"], on_step=lambda name, _: again.append(name))
    assert again == ["evaluate"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    fused = {r["system"]: r for r in rows if r["system"].startswith("twinbert-res + BM25")}
    assert set(fused) == {
        f"twinbert-res + BM25 reranking top {cfg.rerank_depth}",
        f"twinbert-res + BM25 reranking top {cfg.rerank_depth} of its own recall",
    }
    assert all(0 <= r["ndcg@10"] <= 1 and r["rerank_ms"] > 0 for r in fused.values())
    assert json.loads((out / STATE_FILE).read_text())["steps"].keys() == set(STEP_NAMES)

    # A student tuned by an older fusion rule is re-tuned by `--redo students`, not retrained.
    done_path = out / "work" / "students.json"
    done = json.loads(done_path.read_text())
    done["twinbert-cos"]["rerank_fusion"]["rule"] = "an older rule"
    done_path.write_text(json.dumps(done))
    weights = out / "twinbert-cos" / "crossing"
    before = {p.name: p.stat().st_mtime_ns for p in weights.iterdir()}
    again.clear()
    run_recipe(cfg, redo=["students"], until="students", on_step=lambda n, _: again.append(n))
    assert again == ["students"]
    assert json.loads(done_path.read_text())["twinbert-cos"]["rerank_fusion"]["rule"] == RULE
    assert {p.name: p.stat().st_mtime_ns for p in weights.iterdir()} == before
    run_recipe(cfg)  # the later steps again, for the tests that share this run
    # A saved adaptation from other inputs (a re-tuned fusion changes its candidates) is
    # started over by a redo, where a bare `adapt` call would refuse to resume it.
    state_file = out / "twinbert-res-adapted" / "checkpoint" / "state.pt"
    saved = torch.load(state_file, map_location="cpu", weights_only=True)
    saved["config"]["lists"] = "from other inputs"
    torch.save(saved, state_file)
    run_recipe(cfg, redo=["adapt_in_domain"])
    resumed = torch.load(state_file, map_location="cpu", weights_only=True)
    assert resumed["config"]["lists"] != "from other inputs"


def test_explore_teachers_measures_each_variant_alone_on_validation(
    finished: tuple[RecipeConfig, list[str]],
) -> None:
    cfg = finished[0]
    variants = {"plain": {"teacher_warm_steps": 0}, "warm": {"teacher_warm_steps": 2}}
    path = explore_teachers(cfg, variants, depth=3)
    done = json.loads(path.read_text())
    assert list(done) == ["plain", "warm"]
    for name, row in done.items():
        assert (Path(cfg.out) / "teachers" / name / "teacher.json").is_file()
        val = row["validation"]["all"]
        assert val["queries"] >= 1 and 0 <= val["teacher"]["ndcg@10"] <= 1
        assert row["config"]["teacher_warm_steps"] == variants[name]["teacher_warm_steps"]


def test_unknown_step_is_refused(finished: tuple[RecipeConfig, list[str]]) -> None:
    with pytest.raises(ConfigurationError, match="unknown step"):
        run_recipe(finished[0], until="nope")


def test_cli_writes_markdown_table(
    finished: tuple[RecipeConfig, list[str]], base_model: Path, tiny_checkpoint: Path
) -> None:
    cfg = finished[0]  # every step is finished: the CLI resumes to the end and renders
    args = ["scifact", "--data", cfg.data, "--out", cfg.out]
    args += ["--base-model", str(base_model), "--checkpoint", str(tiny_checkpoint)]
    result = CliRunner().invoke(recipe, args)
    assert result.exit_code == 0, result.output
    table = (Path(cfg.out) / "results.md").read_text()
    assert "| BM25 |" in table and "Recipe wall time" in table and "Machine:" in table
    assert "Command: `twinbert-search" in table


def test_student_loss_mixes_the_teachers_softmax_and_the_labels() -> None:
    scores = torch.tensor([2.0, 0.0, -1.0, 0.5])
    teacher = torch.tensor([0.0, 3.0, -1.0, 0.0])
    positives = torch.tensor([False, True, False, True])
    logp = torch.log_softmax(scores, -1)
    kl = float((torch.softmax(teacher, -1) * (torch.log_softmax(teacher, -1) - logp)).sum())
    labels = float(-(logp[1] + logp[3]) / 2)

    def loss(**kw) -> float:
        return float(student_loss(scores, teacher, positives, StudentSpec("s", **kw)))

    assert loss() == pytest.approx(kl, rel=1e-5)
    assert loss(label_weight=0.5) == pytest.approx(kl + 0.5 * labels, rel=1e-5)
    assert loss(label_weight=1.0, distill_weight=0.0) == pytest.approx(labels, rel=1e-5)
    none = torch.zeros(4, dtype=torch.bool)  # no positive among the candidates: KL only
    assert float(student_loss(scores, teacher, none, StudentSpec("s", label_weight=1.0))) == (
        pytest.approx(kl, rel=1e-5)
    )
    # The label term pulls the positives up: its gradient is negative on them.
    s = scores.clone().requires_grad_(True)
    student_loss(
        s, teacher, positives, StudentSpec("s", label_weight=1.0, distill_weight=0)
    ).backward()
    assert bool((s.grad[positives] < 0).all()) and bool((s.grad[~positives] > 0).all())


def test_block_timing_warms_each_system_and_alternates_the_order() -> None:
    from twinbert_search.training.recipe import block_timing

    calls: list[tuple[str, str]] = []
    systems = {name: (lambda q, name=name: calls.append((name, q))) for name in ("a", "b")}
    timing = block_timing(systems, ["q1", "q2", "q3"], "warm", block=2)
    assert calls == [
        ("a", "warm"), ("a", "q1"), ("a", "q2"), ("b", "warm"), ("b", "q1"), ("b", "q2"),
        ("b", "warm"), ("b", "q3"), ("a", "warm"), ("a", "q3"),
    ]  # fmt: skip
    assert timing["queries"] == 3 and timing["block"] == 2
    assert set(timing["ms_per_query"]) == set(timing["cold_ms_per_call"]) == {"a", "b"}


def test_lexical_fusion_moves_from_the_student_to_bm25_with_the_weight() -> None:
    import numpy as np

    from twinbert_search.training.recipe import lexical_fusion

    logits = np.array([3.0, 2.0, 1.0, 0.0])
    bm25 = np.array([0.0, 1.0, 2.0, 30.0])
    assert np.argsort(-lexical_fusion(logits, bm25, 0.0)).tolist() == [0, 1, 2, 3]
    assert np.argsort(-lexical_fusion(logits, bm25, 100.0))[0] == 3
    # z-scored: scaling either input does not change the fused order
    a = lexical_fusion(logits, bm25, 1.0)
    np.testing.assert_allclose(a, lexical_fusion(10 * logits, 0.5 * bm25, 1.0))
