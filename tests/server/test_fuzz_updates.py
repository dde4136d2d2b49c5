"""Fuzzing the server's update validation: a random update is accepted iff it is valid.

The oracle is the definition, written independently of common/adapters.py: as many
arrays as the adapter, each of the adapter's shape, a floating dtype, every value
finite, and (with a bound) the global L2 norm within it. Random payload bytes are
always rejected. Whatever arrives, aggregate_fit never raises.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common.adapters import AdapterSpec
from server.strategy.fedavg import DeltaFedAvg

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

SPEC = AdapterSpec(names=("a", "b"), shapes=((2, 3), (4,)))
BOUND = 50.0

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64]
shapes = st.sampled_from(SPEC.shapes) | hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(shapes)
    elements = None
    if np.issubdtype(dtype, np.floating):
        width = np.finfo(dtype).bits
        elements = st.floats(width=width, allow_nan=True, allow_infinity=True) | st.floats(
            -10, 10, width=width
        )
    return draw(hnp.arrays(dtype, shape, elements=elements))


updates = st.lists(arrays(), min_size=0, max_size=3) | st.tuples(
    *[arrays() for _ in SPEC.shapes]
).map(list)


def _valid(update: list[np.ndarray], bound: float | None) -> bool:
    if len(update) != len(SPEC.shapes):
        return False
    for array, shape in zip(update, SPEC.shapes, strict=True):
        if array.shape != shape or array.dtype.kind != "f":
            return False
        if not all(math.isfinite(float(x)) for x in array.ravel()):
            return False
    if bound is None:
        return True
    return math.hypot(*(float(x) for array in update for x in array.ravel())) <= bound


def _fitres(parameters: Parameters, n: int = 7) -> tuple[None, FitRes]:
    return (None, FitRes(Status(Code.OK, ""), parameters, n, {"client_id": "fuzz"}))


def _rejected(parameters: Parameters, bound: float | None) -> bool:
    initial = [np.zeros(s, np.float32) for s in SPEC.shapes]
    strategy = DeltaFedAvg(
        spec=SPEC, initial=initial, clients_per_round=1, min_clients=1, max_update_norm=bound
    )
    strategy.aggregate_fit(1, [_fitres(parameters)], [])
    return bool(strategy.records[1]["num_rejected"])


@FUZZ
@given(updates, st.sampled_from([None, BOUND]))
def test_update_accepted_iff_valid(update: list[np.ndarray], bound: float | None) -> None:
    assert _rejected(ndarrays_to_parameters(update), bound) == (not _valid(update, bound))


@FUZZ
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=3))
def test_random_payload_bytes_are_rejected(tensors: list[bytes]) -> None:
    assert _rejected(Parameters(tensors=tensors, tensor_type="numpy.ndarray"), None)


@FUZZ
@given(st.sampled_from([0, 1]), st.integers(min_value=1, max_value=120))
def test_truncated_valid_payloads_are_rejected(index: int, cut: int) -> None:
    """A valid update cut short anywhere (a broken transfer) is rejected, never decoded."""
    update = [np.ones(s, np.float32) for s in SPEC.shapes]
    tensors = list(ndarrays_to_parameters(update).tensors)
    tensors[index] = tensors[index][: max(len(tensors[index]) - cut, 0)]
    assert _rejected(Parameters(tensors=tensors, tensor_type="numpy.ndarray"), None)
