"""A central-DP round without Flower or a model: DeltaFedAvg with CentralDP on one big
array, so the noise's std and one client's influence can be measured."""

from __future__ import annotations

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from common.adapters import AdapterSpec
from server.central_dp import CentralDP
from server.strategy.fedavg import DeltaFedAvg

SPEC = AdapterSpec(names=("w",), shapes=((50_000,),))
CLIP = 0.5


def central(sigma: float, m: int = 4) -> CentralDP:
    return CentralDP(noise_multiplier=sigma, clipping_norm=CLIP, expected_clients=m)


def strategy(sigma: float, m: int = 4, **kwargs) -> DeltaFedAvg:  # type: ignore[no-untyped-def]
    initial = [np.zeros(SPEC.shapes[0], np.float32)]
    return DeltaFedAvg(
        spec=SPEC,
        initial=initial,
        clients_per_round=m,
        min_clients=2,
        fixed_weight=True,
        central_dp=central(sigma, m),
        **kwargs,
    )


def update(rng: np.random.Generator, norm: float) -> list[np.ndarray]:
    array = rng.normal(size=SPEC.shapes[0])
    return [(array * norm / np.linalg.norm(array)).astype(np.float32)]


def result(delta: list[np.ndarray] | None):  # type: ignore[no-untyped-def]
    if delta is None:  # a refusal: zero delta, weight 0
        zeros = [np.zeros(SPEC.shapes[0], np.float32)]
        return (
            None,
            FitRes(Status(Code.OK, ""), ndarrays_to_parameters(zeros), 0, {"refused": True}),
        )
    return (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), 1, {}))


def release(strategy: DeltaFedAvg, deltas: list) -> np.ndarray:  # type: ignore[type-arg]
    params, _ = strategy.aggregate_fit(1, [result(d) for d in deltas], [])
    assert params is not None
    return parameters_to_ndarrays(params)[0].astype(np.float64)
