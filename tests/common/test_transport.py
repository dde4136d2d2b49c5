"""common/transport.py: a message's arrays travel as one array and arrive byte-for-byte."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.transport import LAYOUT, PACKED, pack, unpack


def _content(seed: int = 0) -> RecordDict:
    rng = np.random.default_rng(seed)
    arrays = {
        "lora_A": Array(rng.normal(size=(8, 32)).astype(np.float32)),
        "lora_B": Array(rng.normal(size=(32, 8)).astype(np.float32)),
        "bias": Array(rng.normal(size=(5,)).astype(np.float64)),
        "scalar": Array(np.array(3, dtype=np.int64)),  # 0-d
        "empty": Array(np.zeros((0, 4), dtype=np.float32)),
        "step": Array(np.arange(6, dtype=np.int32).reshape(2, 3)),
    }
    return RecordDict(
        {
            "fitins.parameters": ArrayRecord(arrays),
            "fitins.config": ConfigRecord({"lr": 0.1, "round": 3}),
            "one": ArrayRecord({"only": Array(np.ones(3, dtype=np.float32))}),
            "m": MetricRecord({"loss": 1.5}),
        }
    )


def _same(a: RecordDict, b: RecordDict) -> None:
    assert list(a.keys()) == list(b.keys())
    for name, record in a.items():
        other = b[name]
        assert type(other) is type(record)
        if isinstance(record, ArrayRecord):
            assert list(record.keys()) == list(other.keys())  # order kept
            for key, array in record.items():
                got = other[key]
                assert (got.dtype, got.shape, got.stype, got.data) == (
                    array.dtype,
                    array.shape,
                    array.stype,
                    array.data,
                )
        else:
            assert dict(record) == dict(other)


def test_round_trip_is_exact() -> None:
    original = _content()
    packed = pack(_content())
    _same(original, unpack(packed))


def test_many_arrays_become_one_and_singletons_stay() -> None:
    packed = pack(_content())
    assert list(packed["fitins.parameters"].keys()) == [PACKED]
    assert "fitins.parameters" + LAYOUT in packed
    blob = packed["fitins.parameters"][PACKED].numpy()
    assert blob.dtype == np.uint8
    assert blob.nbytes == sum(len(a.data) for a in _content()["fitins.parameters"].values())
    assert list(packed["one"].keys()) == ["only"] and "one" + LAYOUT not in packed


def test_unpacked_arrays_equal_the_numpy_originals() -> None:
    restored = unpack(pack(_content(seed=7)))["fitins.parameters"]
    for key, array in _content(seed=7)["fitins.parameters"].items():
        np.testing.assert_array_equal(restored[key].numpy(), array.numpy())
        assert restored[key].numpy().dtype == array.numpy().dtype


def test_a_message_that_was_not_packed_passes_unchanged() -> None:
    _same(_content(), unpack(_content()))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("sizes", [1, 2, 3], "differ in length"),
        ("dims", [8], "dims"),
        ("sizes", [4, 4, 4, 4, 4, 4], "bytes"),
    ],
)
def test_a_layout_that_does_not_match_its_bytes_is_refused(
    field: str, value: list[int], match: str
) -> None:
    packed = pack(_content())
    packed["fitins.parameters" + LAYOUT][field] = value
    with pytest.raises(ValueError, match=rf"'fitins.parameters'.*{match}"):
        unpack(packed)


def test_a_layout_without_its_fields_is_refused() -> None:
    packed = pack(_content())
    del packed["fitins.parameters" + LAYOUT]["dtypes"]
    with pytest.raises(ValueError, match="'fitins.parameters': missing"):
        unpack(packed)
