"""The re-rank descriptors as an index version keeps them (index/descriptors.py): int8 codes
with one scale per scene read back as unit rows close to the originals, codes that survive
being read back and coded again, float16 as before, and rows that cannot be coded refused."""

from __future__ import annotations

import numpy as np
import pytest

from index.descriptors import CHUNK, DTYPES, check_dtype, decoded, encoded, kept_as


def unit_rows(count: int, width: int = 1280, seed: int = 0) -> np.ndarray:
    """Rows like a ReLU backbone's pooled features (non-negative, many zeros), and rows with
    negative values (`grn synth`'s), on the unit sphere."""
    rng = np.random.default_rng(seed)
    relu = np.maximum(rng.standard_normal((count, width)), 0) ** 2
    signed = rng.standard_normal((count, width))
    rows = np.vstack([relu, signed]).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_int8_codes_read_back_as_unit_rows_near_the_originals() -> None:
    rows = unit_rows(50)
    codes = encoded(rows, "int8")
    assert codes.dtype == np.int8 and codes.shape == rows.shape
    assert np.all(np.abs(codes).max(axis=1) == 127)  # each row scaled to its own peak
    back = decoded(codes)
    assert back.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)
    step = np.abs(rows).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(back - rows) <= step)  # half a step of rounding, and the norm's share
    cosines = back @ rows.T - rows @ rows.T
    assert np.abs(cosines).max() < 5e-3
    assert kept_as(codes) == "int8"


def test_coding_read_back_codes_gives_the_same_codes() -> None:
    """An incremental build codes its parent's rows again, or copies them: the same bytes."""
    codes = encoded(unit_rows(30, seed=1), "int8")
    np.testing.assert_array_equal(encoded(decoded(codes), "int8"), codes)
    assert encoded(codes, "int8") is codes  # kept as they are, no copy


def test_float16_rows_convert_both_ways() -> None:
    rows = unit_rows(20, seed=2)
    halves = encoded(rows, "float16")
    assert halves.dtype == np.float16 and kept_as(halves) == "float16"
    np.testing.assert_array_equal(decoded(halves), halves.astype(np.float32))
    np.testing.assert_array_equal(encoded(halves, "int8"), encoded(rows.astype(np.float16), "int8"))
    from_codes = encoded(encoded(rows, "int8"), "float16")  # an int8 parent into float16
    np.testing.assert_allclose(from_codes.astype(np.float32), rows, atol=1e-2)


def test_rows_are_coded_in_pieces_as_they_would_be_whole() -> None:
    rows = np.tile(unit_rows(3, width=16, seed=3), (CHUNK // 6 + 5, 1))
    codes = encoded(rows.astype(np.float16), "int8")
    assert len(codes) > CHUNK
    same = CHUNK % 6  # the rows repeat every 6
    np.testing.assert_array_equal(codes[CHUNK : CHUNK + 6], codes[same : same + 6])


def test_an_all_zero_row_stays_zero() -> None:
    rows = unit_rows(2, width=8)
    rows[1] = 0
    codes = encoded(rows, "int8")
    assert not codes[1].any() and not decoded(codes)[1].any()


def test_rows_that_are_not_unit_are_refused_for_int8() -> None:
    rows = unit_rows(4, width=8)
    rows[3] *= 2
    with pytest.raises(ValueError, match=r"descriptor 3 has norm 2\.0000: int8 keeps unit rows"):
        encoded(rows, "int8")
    assert encoded(rows, "float16").dtype == np.float16  # float16 keeps any row


def test_only_the_known_dtypes() -> None:
    assert DTYPES == ("int8", "float16") and check_dtype("float16") == "float16"
    with pytest.raises(ValueError, match="one of int8, float16, not 'int4'"):
        encoded(unit_rows(1, width=8), "int4")
    with pytest.raises(ValueError, match="not 'float32'"):
        kept_as(np.zeros((1, 8), np.float32))
