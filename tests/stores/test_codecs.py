"""Vector codecs: round-trip error bounds, row gathers, sizes, names."""

from __future__ import annotations

import numpy as np
import pytest

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.embedded.codecs import CODEC_NAMES, get_codec


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_decode_shape_and_dtype(name: str) -> None:
    codec = get_codec(name)
    x = unit_vectors(10, 16)
    decoded = codec.decode(codec.encode(x))
    assert decoded.shape == (10, 16)
    assert decoded.dtype == np.float32


def test_float32_is_exact() -> None:
    codec = get_codec("float32")
    x = unit_vectors(50, 16)
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), x)


def test_float16_error_is_about_1e_3() -> None:
    codec = get_codec("float16")
    x = unit_vectors(200, 64)
    assert np.abs(codec.decode(codec.encode(x)) - x).max() < 1e-3


def test_int8_keeps_cosine_above_0_999() -> None:
    codec = get_codec("int8")
    x = unit_vectors(500, 64)
    arrays = codec.encode(x)
    assert arrays["vectors"].dtype == np.int8
    assert arrays["scales"].dtype == np.float32
    decoded = codec.decode(arrays)
    cosine = (decoded * x).sum(1) / np.linalg.norm(decoded, axis=1)
    assert cosine.min() >= 0.999
    np.testing.assert_allclose(arrays["scales"], np.abs(x).max(1) / 127, rtol=1e-6)


def test_int8_zero_vector_stays_zero() -> None:
    codec = get_codec("int8")
    x = np.zeros((2, 8), np.float32)
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), x)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_row_gather_matches_full_decode(name: str, tmp_path) -> None:
    codec = get_codec(name)
    x = unit_vectors(300, 32)
    arrays = codec.encode(x)
    for key, array in arrays.items():  # decode from memory maps, as the store does
        np.save(tmp_path / f"{key}.npy", array)
    mapped = {key: np.load(tmp_path / f"{key}.npy", mmap_mode="r") for key in arrays}
    rows = np.array([299, 0, 17, 17, 150])
    gathered = codec.decode(mapped, rows)
    np.testing.assert_array_equal(gathered, codec.decode(arrays)[rows])
    assert type(gathered) is np.ndarray


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_blobs_round_trip(name: str) -> None:
    codec = get_codec(name)
    x = unit_vectors(7, 12)
    arrays = codec.encode(x)
    blobs, scales = codec.to_blobs(arrays)
    assert len(blobs) == 7 and all(
        len(b) == codec.bytes_per_vector(12) - 4 * codec.has_scale for b in blobs
    )
    restored = codec.from_blobs(blobs, scales, 12)
    np.testing.assert_array_equal(codec.decode(restored), codec.decode(arrays))


def test_bytes_per_vector() -> None:
    assert get_codec("float32").bytes_per_vector(384) == 1536
    assert get_codec("float16").bytes_per_vector(384) == 768
    assert get_codec("int8").bytes_per_vector(384) == 388


def test_unknown_codec_lists_valid_names() -> None:
    with pytest.raises(ConfigurationError, match="float32, float16, int8"):
        get_codec("bfloat16")


def test_encode_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="shape"):
        get_codec("int8").encode(np.zeros(8, np.float32))
