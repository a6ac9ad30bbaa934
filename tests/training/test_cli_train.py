"""`teacher train`, `distill` and `export` through click, end to end on the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.training.test_teacher import TRAIN, write_tiny_beir
from twinbert_search.cli.train import distill, export, teacher
from twinbert_search.errors import ConfigurationError, InputError, ModelError
from twinbert_search.manifest import ModelManifest
from twinbert_search.training.teacher import TEACHER_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(command, args: str | list):
    """Run a command; a string is split on whitespace (the test paths hold no spaces)."""
    argv = args.split() if isinstance(args, str) else [str(a) for a in args]
    return CliRunner().invoke(command, argv, catch_exceptions=True)


def test_teacher_train_distill_export_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    beir = write_tiny_beir(tmp_path / "beir")
    teacher_dir = tmp_path / "teacher"
    result = _invoke(
        teacher,
        f"train --data {beir} --out {teacher_dir} --checkpoint {tiny_checkpoint} --steps 2 "
        "--batch-size 2 --max-length 48 --eval-every 2 --pooling mean --seed 1 --no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "validation teacher: ndcg@10" in result.output
    assert (teacher_dir / TEACHER_FILE).is_file()

    student = tmp_path / "student"
    result = _invoke(
        distill,
        f"--data {beir} --teacher {teacher_dir} --out {student} --checkpoint {tiny_checkpoint} "
        "--steps 2 --batch-size 2 --candidates 3 --crossing residual --combine concat "
        "--num-layers 1 --max-query-length 16 --max-doc-length 32 --pseudo-queries 2 "
        "--temperature 2.0 --lr 1e-4 --seed 1 --no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "query_encoder fp32 max |diff|" in result.output
    assert "query_encoder int8 min cosine" in result.output
    manifest = ModelManifest.load(student)
    assert manifest.num_layers == 1 and manifest.crossing.type == "residual"
    assert manifest.crossing.combine == "concat"

    result = _invoke(export, ["--model", student])
    assert result.exit_code == 0, result.output
    assert "query_encoder fp32 max |diff|" in result.output
    assert "int8" not in result.output


def test_export_builds_a_model_from_a_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = _invoke(
        export,
        f"--checkpoint {tiny_checkpoint} --out {out} --pooling mean --int8 "
        "--max-query-length 16 --max-doc-length 32",
    )
    assert result.exit_code == 0, result.output
    assert "query_encoder int8 min cosine" in result.output
    assert ModelManifest.load(out).onnx["query_encoder_int8"] == "onnx/query_encoder.int8.onnx"

    residual = tmp_path / "residual"
    result = _invoke(
        export,
        f"--checkpoint {tiny_checkpoint} --out {residual} --crossing residual --hidden 24 "
        "--max-query-length 16 --max-doc-length 32",
    )
    assert result.exit_code == 0, result.output
    crossing = ModelManifest.load(residual).crossing
    assert (crossing.type, crossing.hidden, crossing.output_relu) == ("residual", 24, False)


def test_commands_raise_the_project_errors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    beir = write_tiny_beir(tmp_path / "beir")
    result = _invoke(
        teacher,
        ["train", "--data", beir, "--out", tmp_path / "t", "--checkpoint", tmp_path / "nope"],
    )
    assert isinstance(result.exception, ModelError)
    assert "checkpoint directory not found" in str(result.exception)

    bad = write_tiny_beir(tmp_path / "bad", train=[*TRAIN, ("q9", "d1", 1)])
    result = _invoke(distill, ["--data", bad, "--teacher", tmp_path / "t", "--out", tmp_path / "s"])
    assert isinstance(result.exception, InputError)
    assert "'q9'" in str(result.exception) and "\n" not in str(result.exception)

    result = _invoke(export, [])
    assert isinstance(result.exception, ConfigurationError)
    result = _invoke(export, ["--model", tmp_path, "--checkpoint", tiny_checkpoint])
    assert isinstance(result.exception, ConfigurationError)
    result = _invoke(export, ["--model", tmp_path / "missing"])
    assert isinstance(result.exception, ModelError)


def test_importing_the_commands_does_not_import_torch() -> None:
    code = "import sys, twinbert_search.cli.train; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
