"""The PyTorch model: pooling, crossing layers, save/load, bad checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from twinbert_search.errors import ModelError
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.crossing import CosineCrossing, ResidualCrossing
from twinbert_search.training.modeling import Pooling, TwinBert, TwinBertConfig, load_backbone
from twinbert_search.training.tokenizer import to_torch


@pytest.mark.parametrize("mode", ["mean", "weighted", "cls"])
def test_pooling_ignores_padding(mode: str) -> None:
    torch.manual_seed(1)
    pooling = Pooling(8, mode)
    if pooling.score is not None:  # make the learned scores non-trivial
        torch.nn.init.normal_(pooling.score.weight)
    tokens = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    before = pooling(tokens, mask)
    tokens[0, 3:] = torch.randn(3, 8) * 100  # change only the padded positions
    after = pooling(tokens, mask)
    assert torch.allclose(before, after, atol=1e-6)


def test_weighted_pooling_starts_as_mean_pooling() -> None:
    tokens = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert torch.allclose(
        Pooling(8, "weighted")(tokens, mask), Pooling(8, "mean")(tokens, mask), atol=1e-6
    )


def test_tower_padding_invariance(tiny_checkpoint: Path) -> None:
    """A text encodes the same alone and padded inside a batch with a longer one."""
    model = TwinBert.from_checkpoint(tiny_checkpoint, TwinBertConfig(pooling="weighted")).eval()
    tok = TextTokenizer.from_file(tiny_checkpoint / "tokenizer.json", 32)
    with torch.no_grad():
        alone = model.encode_queries(to_torch(tok(["the star"])))
        batched = model.encode_queries(
            to_torch(tok(["the star", "the moon and the sun orbit a planet"]))
        )
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert torch.allclose(batched.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_cosine_crossing_shape_and_range() -> None:
    crossing = CosineCrossing(scale=10.0, bias=-5.0)
    q, d = torch.randn(7, 16), torch.randn(7, 16)
    logits = crossing(q, d)
    assert logits.shape == (7,)
    # cos in [-1, 1] -> logit in [bias - scale, bias + scale]
    assert bool(((logits >= -15.0 - 1e-4) & (logits <= 5.0 + 1e-4)).all())
    probs = torch.sigmoid(logits)
    assert bool(((probs > 0) & (probs < 1)).all())
    same = crossing(q, q)
    assert torch.allclose(same, torch.full((7,), 5.0), atol=1e-4)


@pytest.mark.parametrize("combine", ["max", "concat", "mul"])
def test_residual_crossing_shape_and_layers(combine: str) -> None:
    crossing = ResidualCrossing(dim=16, hidden=8, combine=combine)
    width = 32 if combine == "concat" else 16
    assert crossing.dense1.in_features == width and crossing.dense1.out_features == 8
    assert crossing.dense2.out_features == width  # back to the combined width for the residual
    logits = crossing(torch.randn(5, 16), torch.randn(5, 16))
    assert logits.shape == (5,)
    assert bool(torch.isfinite(logits).all())
    with pytest.raises(ValueError, match="differ"):
        crossing(torch.randn(5, 16), torch.randn(4, 16))


def test_mul_residual_starts_as_the_cosine_crossing_and_can_leave_it() -> None:
    """Its add-back path is q * d with equal output weights: scale * cos for unit vectors."""
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    residual = ResidualCrossing(dim=16, hidden=8, combine="mul")
    assert torch.allclose(residual(q, d), CosineCrossing()(q, d), atol=1e-5)
    # dense2 starts at zero, yet gradients reach it, so the block can learn beyond cosine.
    residual(q, d).sum().backward()
    assert residual.dense2.weight.grad is not None and residual.dense2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="combine"):
        ResidualCrossing(dim=16, hidden=8, combine="sum")


def test_num_layers_truncates_backbone(tiny_checkpoint: Path) -> None:
    model = TwinBert.from_checkpoint(tiny_checkpoint, TwinBertConfig(num_layers=1))
    assert len(model.query_tower.backbone.encoder.layer) == 1
    assert model.manifest.num_layers == 1
    with pytest.raises(ModelError, match="num_layers"):
        TwinBert.from_checkpoint(tiny_checkpoint, TwinBertConfig(num_layers=5))


def test_separate_towers_have_separate_weights(tiny_checkpoint: Path) -> None:
    model = TwinBert.from_checkpoint(tiny_checkpoint, TwinBertConfig(shared_towers=False))
    assert model.query_tower is not model.doc_tower
    with torch.no_grad():
        model.doc_tower.backbone.embeddings.word_embeddings.weight.add_(1.0)
    assert not torch.equal(
        model.query_tower.backbone.embeddings.word_embeddings.weight,
        model.doc_tower.backbone.embeddings.word_embeddings.weight,
    )


def test_save_load_round_trip_keeps_fingerprint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = TwinBertConfig(
        pooling="weighted",
        projection_dim=8,
        shared_towers=False,
        crossing=CrossingConfig("residual", "max", 12),
    )
    model = TwinBert.from_checkpoint(tiny_checkpoint, config)
    with torch.no_grad():
        model.query_tower.pooling.score.weight.normal_()
    manifest = model.save(tmp_path / "m", tiny_checkpoint / "tokenizer.json")
    loaded = TwinBert.load(tmp_path / "m")
    assert loaded.fingerprint() == manifest.fingerprint
    assert ModelManifest.load(tmp_path / "m").dim == 8
    with torch.no_grad():
        loaded.crossing.out.bias.add_(1.0)
    assert loaded.fingerprint() != manifest.fingerprint


def test_missing_checkpoint_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_backbone(tmp_path / "nope")


def test_checkpoint_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_backbone(tmp_path)


def test_checkpoint_that_is_not_bert_like(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelError, match="not BERT-like"):
        load_backbone(tmp_path)


def test_manifest_rejects_newer_format_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="newer"):
        ModelManifest.from_dict({"dim": 4, "format_version": 99})
    with pytest.raises(ModelError, match="pooling"):
        ModelManifest.from_dict({"dim": 4, "pooling": "max"})
    with pytest.raises(ModelError, match="combine"):
        ModelManifest.from_dict({"dim": 4, "crossing": {"type": "residual", "combine": "sum"}})
    with pytest.raises(ModelError, match="not a twinbert-search model"):
        ModelManifest.load(tmp_path)


def test_residual_without_output_relu_is_linear_after_the_hidden_relu() -> None:
    """The paper's block: out(x + dense2(relu(dense1(x)))); the legacy form clips z at 0."""
    torch.manual_seed(0)
    plain = ResidualCrossing(dim=16, hidden=8, combine="max")
    legacy = ResidualCrossing(dim=16, hidden=8, combine="max", output_relu=True)
    legacy.load_state_dict(plain.state_dict())
    q, d = torch.randn(6, 16), torch.randn(6, 16)
    x = torch.maximum(q, d)
    z = plain.dense2(torch.relu(plain.dense1(x))) + x
    assert torch.allclose(plain(q, d), plain.out(z).squeeze(-1), atol=1e-6)
    assert torch.allclose(legacy(q, d), plain.out(torch.relu(z)).squeeze(-1), atol=1e-6)
    assert not torch.allclose(plain(q, d), legacy(q, d))


def test_manifests_without_output_relu_keep_the_legacy_crossing() -> None:
    old = ModelManifest.from_dict({"dim": 8, "crossing": {"type": "residual", "hidden": 4}})
    assert old.crossing.output_relu is True
    new = ModelManifest(dim=8, crossing=CrossingConfig("residual", "max", 4))
    assert new.crossing.output_relu is False
    assert ModelManifest.from_dict(new.to_dict()).crossing.output_relu is False


def test_cosine_fingerprint_ignores_residual_settings(tiny_checkpoint) -> None:
    """The residual defaults changed once (hidden 256 -> 128) and silently orphaned indexes
    built by the cosine default model: settings a cosine layer never uses stay out."""
    from twinbert_search.manifest import CrossingConfig
    from twinbert_search.training.modeling import TwinBert, TwinBertConfig

    def fingerprint(crossing: CrossingConfig) -> str:
        return TwinBert.from_checkpoint(
            tiny_checkpoint, TwinBertConfig(crossing=crossing)
        ).fingerprint()

    assert fingerprint(CrossingConfig("cosine", "max", 128)) == fingerprint(
        CrossingConfig("cosine", "concat", 256)
    )
    assert fingerprint(CrossingConfig("residual", "max", 128)) != fingerprint(
        CrossingConfig("residual", "max", 256)
    )
