"""The shared student loop: validation picks the kept weights; settings it refuses."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.search import reciprocal_rank_fusion
from twinbert_search.training.data import Checkpointing, Validation
from twinbert_search.training.modeling import TwinBert, TwinBertConfig
from twinbert_search.training.recipe.candidates import hybrid_rows
from twinbert_search.training.student_loop import ScoredList, StoredVectors, fit_student

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(checkpoint: Path) -> tuple[TwinBert, TextTokenizer, StoredVectors, list[ScoredList]]:
    torch.manual_seed(0)
    config = TwinBertConfig(
        pooling="mean", max_query_length=16, crossing=CrossingConfig("residual", "mul", 8)
    )
    model = TwinBert.from_checkpoint(checkpoint, config)
    tok = TextTokenizer.from_file(checkpoint / "tokenizer.json", 16)
    ids = [f"d{i}" for i in range(6)]
    vectors = torch.nn.functional.normalize(torch.randn(6, model.query_tower.dim), dim=-1)
    documents = StoredVectors(vectors, {d: i for i, d in enumerate(ids)})
    rng = np.random.default_rng(0)
    lists = [
        ScoredList(
            text,
            tuple(ids[:4]) if i % 2 else tuple(ids[2:]),
            rng.normal(size=4).astype(np.float32),
            np.array([True, False, False, False]),
        )
        for i, text in enumerate(["the star", "bread oven", "the heart", "a river"])
    ]
    return model, tok, documents, lists


def test_fit_student_keeps_the_best_validated_weights(tiny_checkpoint: Path) -> None:
    model, tok, documents, lists = _setup(tiny_checkpoint)
    scores = iter([0.9, 0.5, 0.7, 0.6])  # step 0 is a reference only: never kept
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def validate() -> Validation:
        assert not model.training and not torch.is_grad_enabled()
        seen[len(seen)] = {k: v.clone() for k, v in model.crossing.state_dict().items()}
        value = next(scores)
        return Validation(value, {"val_ndcg@10": value})

    fit = fit_student(
        model,
        lambda step: lists[step % 2 :: 2],
        steps=3,
        lr=1e-3,
        crossing_lr=1e-2,
        warmup_steps=1,
        query_tokenizer=tok,
        documents=documents,
        loss="listwise_kl",
        label_weight=1.0,
        validate=validate,
        eval_every=1,
    )
    assert [e["step"] for e in fit.evaluations] == [0, 1, 2, 3]
    assert fit.evaluations[2] == {"step": 2, "loss": fit.history[1]["total"], "val_ndcg@10": 0.7}
    assert fit.best_step == 2 and fit.best_score == 0.7
    kept = model.crossing.state_dict()
    assert all(torch.equal(kept[k], seen[2][k]) for k in kept)
    assert not all(torch.equal(kept[k], seen[3][k]) for k in kept)
    assert [h["step"] for h in fit.history] == [1, 2, 3]  # every step logged, kept or not


def test_fit_student_refuses_unknown_losses_and_checkpointed_validation(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    model, tok, documents, lists = _setup(tiny_checkpoint)
    options = dict(
        steps=1,
        lr=1e-3,
        crossing_lr=1e-2,
        warmup_steps=1,
        query_tokenizer=tok,
        documents=documents,
    )
    with pytest.raises(ConfigurationError, match="loss must be one of"):
        fit_student(model, lambda step: lists, loss="kl", **options)
    with pytest.raises(ConfigurationError, match="best weights in memory"):
        fit_student(
            model,
            lambda step: lists,
            validate=lambda: Validation(0.0, {}),
            checkpoint=Checkpointing(tmp_path, 1, {}),
            **options,
        )


def test_recipe_hybrid_recall_is_the_search_pipelines_rrf() -> None:
    doc_ids = ["a", "b", "c", "d", "e"]
    ctx = SimpleNamespace(doc_ids=doc_ids, row_of={d: i for i, d in enumerate(doc_ids)})
    dense, sparse = [3, 1, 0], [1, 4, 2]
    fused = reciprocal_rank_fusion([["d", "b", "a"], ["b", "e", "c"]])
    assert hybrid_rows(ctx, dense, sparse) == [doc_ids.index(d) for d, _ in fused]
    # equal fused scores fall in row order (the ids are sorted)
    assert hybrid_rows(ctx, [2], [0]) == [0, 2]
