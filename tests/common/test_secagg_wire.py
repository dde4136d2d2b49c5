"""SecAgg+ masked vectors on the wire: narrowed to uint32 and widened back, losslessly."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray, ndarray_to_bytes

from common.secagg_wire import narrow, narrow_dtype, widen

MOD = 2**32


def _masked(seed: int = 0) -> list[np.ndarray]:
    """Arrays as Flower's mod sends them: int64, every value in [0, 2³²), edges included."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, MOD, size=(7, 5), dtype=np.int64)
    big[0, 0], big[-1, -1] = 0, MOD - 1
    return [
        np.array([123456789], dtype=np.int64),  # the combined weight factor, first
        big,
        rng.integers(0, MOD, size=11, dtype=np.int64),
        np.array(MOD - 1, dtype=np.int64),  # 0-d
        np.zeros((0, 3), dtype=np.int64),  # empty
    ]


def test_round_trip_is_byte_identical_and_halves_the_payload() -> None:
    arrays = _masked()
    sent = [ndarray_to_bytes(a) for a in arrays]
    narrowed = narrow(sent, MOD)
    assert all(bytes_to_ndarray(b).dtype == np.uint32 for b in narrowed)
    values = sum(a.size for a in arrays)
    assert sum(map(len, sent)) - sum(map(len, narrowed)) == 4 * values
    back = widen(narrowed)
    assert back == sent  # exactly the bytes Flower's mod built
    for got, want in zip(map(bytes_to_ndarray, back), arrays, strict=True):
        assert got.dtype == np.int64 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("mod_range", "dtype"),
    [
        (2**8, np.uint8),
        (2**8 + 1, np.uint16),
        (2**16, np.uint16),
        (2**32, np.uint32),
        (2**33, None),
    ],
)
def test_narrowest_unsigned_dtype_holding_the_modulus(mod_range: int, dtype: type | None) -> None:
    assert narrow_dtype(mod_range) == (None if dtype is None else np.dtype(dtype))


def test_smaller_modulus_narrows_further_and_larger_is_left_alone() -> None:
    small = [ndarray_to_bytes(np.array([0, 255, 17], dtype=np.int64))]
    assert bytes_to_ndarray(narrow(small, 2**8)[0]).dtype == np.uint8
    assert widen(narrow(small, 2**8)) == small
    wide = [ndarray_to_bytes(np.array([2**40], dtype=np.int64))]
    assert narrow(wide, 2**41) == wide  # uint64 would save nothing: sent as Flower sent it


@pytest.mark.parametrize("bad", [MOD, -1, 2**40])
def test_a_value_that_does_not_fit_is_refused_by_name(bad: int) -> None:
    arrays = _masked()
    arrays[2][4] = bad
    with pytest.raises(ValueError, match=rf"masked value {bad} \(array 2, index \(4,\)\)"):
        narrow([ndarray_to_bytes(a) for a in arrays], MOD)


def test_non_integer_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="float32"):
        narrow([ndarray_to_bytes(np.ones(3, dtype=np.float32))], MOD)


def test_widen_leaves_unnarrowed_arrays_alone() -> None:
    """A client that sends Flower's int64 arrays (no narrowing) is summed as before."""
    sent = [ndarray_to_bytes(a) for a in _masked(1)]
    assert widen(sent) == sent
