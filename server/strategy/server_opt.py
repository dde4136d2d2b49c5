"""Server optimisers: what the server does with a round's mean adapter delta.

Plain FedAvg adds the example-weighted mean delta Δ to the global adapter. Reddi et al.
(2021, "Adaptive Federated Optimization") instead treat Δ as a pseudo-gradient (an
ascent direction: clients report ``trained - received``) and let a server-side optimiser
decide the step; that damps client drift and noisy DP updates without touching clients.

Every optimiser here reproduces the update of Flower's legacy strategy of the same name
(``flwr.server.strategy.FedAvgM``/``FedAdam``/``FedYogi``/``FedAdagrad``), with the same
defaults, but works on deltas so it composes with SecAgg+ (the server only ever sees the
sum) and with ``DeltaFedAvg``'s validation. Flower writes FedAvgM with the descent
pseudo-gradient ``global - mean = -Δ`` and ``global - η·v``; here ``v`` accumulates
``+Δ`` and the step is ``global + η·v``, which is the same update.

Checkpoint format (``state_dict``): a JSON-serialisable dict::

    {"optimizer": "<registry key>", "format": "npy-base64", "step": <int>,
     "<slot>": [<base64 of np.save(array)>, ...] | null, ...}

Arrays are stored as base64 of their ``.npy`` bytes rather than nested float lists
because ``.npy`` keeps dtype and shape and round-trips bit for bit, so a resumed run
takes exactly the step the uninterrupted run would have. Slots are ``null`` until the
first step creates them. Optimiser state is float64: Adagrad's second moment is a sum
over every round, and in float32 the small late terms would vanish into it.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from common.errors import ConfigError

Arrays = list[np.ndarray]

STATE_FORMAT = "npy-base64"
CONFIG_KEY = "federation.server-optimizer"


@runtime_checkable
class ServerOptimizer(Protocol):
    """Turns the round's mean delta into the next global adapter."""

    def step(self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]) -> Arrays:
        """Return the new global (float32), leaving both inputs untouched."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Return the optimiser's mutable state as JSON-serialisable data."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state ``state_dict`` returned, exactly."""
        ...


# ------------------------------------------------------------------ helpers


def _as_f64(global_arrays: Sequence[np.ndarray], mean_delta: Sequence[np.ndarray]) -> Arrays:
    """Check that Δ matches the global array for array, and return Δ in float64.

    A mismatch means the aggregation produced garbage, so it fails loudly instead of
    broadcasting into a wrong-shaped adapter.
    """
    if len(global_arrays) != len(mean_delta):
        raise ValueError(
            f"mean delta has {len(mean_delta)} arrays, the global has {len(global_arrays)}"
        )
    for i, (g, d) in enumerate(zip(global_arrays, mean_delta, strict=True)):
        if np.shape(g) != np.shape(d):
            raise ValueError(f"array {i}: mean delta shape {np.shape(d)}, global {np.shape(g)}")
    return [np.asarray(d, dtype=np.float64) for d in mean_delta]


def _moved(global_arrays: Sequence[np.ndarray], steps: Sequence[np.ndarray]) -> Arrays:
    """``global + step`` computed in float64 and rounded once to the adapter's float32."""
    return [
        (np.asarray(g, dtype=np.float64) + s).astype(np.float32)
        for g, s in zip(global_arrays, steps, strict=True)
    ]


def _zeros_like(arrays: Sequence[np.ndarray]) -> Arrays:
    return [np.zeros(a.shape, dtype=np.float64) for a in arrays]


def _encode(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode(text: str) -> np.ndarray:
    # allow_pickle=False: a checkpoint is data, never code.
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def _pack(name: str, step: int, **slots: Arrays | None) -> dict[str, Any]:
    state: dict[str, Any] = {"optimizer": name, "format": STATE_FORMAT, "step": int(step)}
    for slot, arrays in slots.items():
        state[slot] = None if arrays is None else [_encode(a) for a in arrays]
    return state


def _unpack(name: str, state: dict[str, Any], *slots: str) -> tuple[int, dict[str, Arrays | None]]:
    """Decode a ``_pack``ed state, refusing one written by a different optimiser.

    Resuming Adam from Yogi's moments would run without error and silently train
    something else, so a mismatch is a configuration error the user must resolve.
    """
    found = state.get("optimizer")
    if found != name:
        raise ConfigError(
            [f"{CONFIG_KEY}: the checkpoint holds {found!r} state but the config selects {name!r}"]
        )
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"unknown server-optimizer state format {state.get('format')!r}")
    decoded = {
        slot: None if state.get(slot) is None else [_decode(t) for t in state[slot]]
        for slot in slots
    }
    return int(state["step"]), decoded


def _check_hyper(name: str, checks: dict[str, tuple[float, Callable[[float], bool], str]]) -> None:
    """Raise one ConfigError listing every out-of-range hyper-parameter."""
    problems = [
        f"{CONFIG_KEY}: {name} {key} must be {rule}, got {value!r}"
        for key, (value, ok, rule) in checks.items()
        if not ok(value)
    ]
    if problems:
        raise ConfigError(problems)


def _positive(x: float) -> bool:
    return x > 0


def _unit_interval(x: float) -> bool:
    return 0 <= x < 1


# ------------------------------------------------------------- optimisers


@dataclass(kw_only=True)
class FedAvgOpt:
    """``global + η·Δ``: FedAvg with a server learning rate (plain FedAvg at η = 1).

    Stateless; it exists so "no server optimiser" goes through the same interface.
    """

    name: ClassVar[str] = "fedavg"
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        _check_hyper(self.name, {"server_lr": (self.server_lr, _positive, "> 0")})

    def step(self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]) -> Arrays:
        delta = _as_f64(global_arrays, mean_delta)
        return _moved(global_arrays, [self.server_lr * d for d in delta])

    def state_dict(self) -> dict[str, Any]:
        return _pack(self.name, 0)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _unpack(self.name, state)


@dataclass(kw_only=True)
class FedAvgM:
    """Heavy-ball server momentum (Hsu et al. 2019), as Flower's FedAvgM.

    ``v ← β·v + Δ`` (v starts at 0, so v₁ = Δ), then ``global + η·v``: no Nesterov, no
    dampening. Defaults are Flower's (η = 1, β = 0), which make it plain FedAvg; Hsu et
    al. use β = 0.9.
    """

    name: ClassVar[str] = "fedavgm"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    t: int = field(default=0, init=False)
    v: Arrays | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_hyper(
            self.name,
            {
                "server_lr": (self.server_lr, _positive, "> 0"),
                "server_momentum": (self.server_momentum, _unit_interval, "in [0, 1)"),
            },
        )

    def step(self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]) -> Arrays:
        delta = _as_f64(global_arrays, mean_delta)
        v = self.v if self.v is not None else _zeros_like(delta)
        self.v = [self.server_momentum * vi + d for vi, d in zip(v, delta, strict=True)]
        self.t += 1
        return _moved(global_arrays, [self.server_lr * vi for vi in self.v])

    def state_dict(self) -> dict[str, Any]:
        return _pack(self.name, self.t, v=self.v)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, slots = _unpack(self.name, state, "v")
        self.v = slots["v"]


@dataclass(kw_only=True)
class _Moments(ABC):
    """First and second moments shared by the FedOpt family (Reddi et al., Alg. 2).

    ``m ← β₁·m + (1−β₁)·Δ`` for all three; each subclass supplies only its second-moment
    rule and step size, which is the whole difference between Adam, Yogi and Adagrad.
    """

    name: ClassVar[str] = ""
    eta: float
    tau: float
    t: int = field(default=0, init=False)
    m: Arrays | None = field(default=None, init=False, repr=False)
    v: Arrays | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_fedopt(self.name, self.eta, self._beta_1(), self._beta_2(), self.tau)

    @abstractmethod
    def _beta_1(self) -> float: ...

    def _beta_2(self) -> float:
        return 0.0  # only Adam and Yogi decay the second moment

    @abstractmethod
    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _step_size(self) -> float: ...

    def step(self, global_arrays: list[np.ndarray], mean_delta: list[np.ndarray]) -> Arrays:
        delta = _as_f64(global_arrays, mean_delta)
        m = self.m if self.m is not None else _zeros_like(delta)
        v = self.v if self.v is not None else _zeros_like(delta)
        b1 = self._beta_1()
        self.m = [b1 * mi + (1.0 - b1) * d for mi, d in zip(m, delta, strict=True)]
        self.v = [self._second_moment(vi, d) for vi, d in zip(v, delta, strict=True)]
        self.t += 1
        eta, tau = self._step_size(), self.tau
        steps = [eta * mi / (np.sqrt(vi) + tau) for mi, vi in zip(self.m, self.v, strict=True)]
        return _moved(global_arrays, steps)

    def state_dict(self) -> dict[str, Any]:
        return _pack(self.name, self.t, m=self.m, v=self.v)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, slots = _unpack(self.name, state, "m", "v")
        self.m, self.v = slots["m"], slots["v"]


def _check_fedopt(name: str, eta: float, beta_1: float, beta_2: float, tau: float) -> None:
    _check_hyper(
        name,
        {
            "eta": (eta, _positive, "> 0"),
            "beta_1": (beta_1, _unit_interval, "in [0, 1)"),
            "beta_2": (beta_2, _unit_interval, "in [0, 1)"),
            "tau": (tau, _positive, "> 0 (it keeps m/(√v+τ) finite where Δ is 0)"),
        },
    )


@dataclass(kw_only=True)
class _AdamFamily(_Moments):
    """Adam and Yogi: both decay their first moment with β₁ and their second with β₂."""

    beta_1: float = 0.9
    beta_2: float = 0.99

    def _beta_1(self) -> float:
        return self.beta_1

    def _beta_2(self) -> float:
        return self.beta_2


@dataclass(kw_only=True)
class FedAdam(_AdamFamily):
    """Adam on the pseudo-gradient, exactly as Flower's FedAdam.

    ``v ← β₂·v + (1−β₂)·Δ²``; step ``η_t·m/(√v + τ)`` with Flower's bias correction
    ``η_t = η·√(1−β₂^(t+1))/(1−β₁^(t+1))``, t the 1-based step count. The exponent is
    Flower's ``server_round + 1``, one ahead of textbook Adam, kept so results match
    Flower's; counting steps rather than rounds keeps the correction right when a round
    fails and no step is taken.
    """

    name: ClassVar[str] = "fedadam"
    eta: float = 1e-1
    tau: float = 1e-9

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1.0 - self.beta_2) * delta * delta

    def _step_size(self) -> float:
        k = self.t + 1.0
        return self.eta * float(np.sqrt(1.0 - self.beta_2**k)) / (1.0 - self.beta_1**k)


@dataclass(kw_only=True)
class FedYogi(_AdamFamily):
    """Yogi on the pseudo-gradient, exactly as Flower's FedYogi.

    ``v ← v − (1−β₂)·Δ²·sign(v − Δ²)`` (v starts at 0); step ``η·m/(√v + τ)``, no bias
    correction. Yogi's additive v grows slower than Adam's when Δ spikes, which suits
    DP-noised deltas.
    """

    name: ClassVar[str] = "fedyogi"
    eta: float = 1e-2
    tau: float = 1e-3

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        sq = delta * delta
        return v - (1.0 - self.beta_2) * sq * np.sign(v - sq)

    def _step_size(self) -> float:
        return self.eta


@dataclass(kw_only=True)
class FedAdagrad(_Moments):
    """Adagrad on the pseudo-gradient, exactly as Flower's FedAdagrad.

    Flower fixes β₁ = 0, so m = Δ; ``v ← v + Δ²``; step ``η·Δ/(√v + τ)``, no bias
    correction.
    """

    name: ClassVar[str] = "fedadagrad"
    eta: float = 1e-1
    tau: float = 1e-9

    def _beta_1(self) -> float:
        return 0.0

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return v + delta * delta

    def _step_size(self) -> float:
        return self.eta


# --------------------------------------------------------------- registry

SERVER_OPTIMIZERS: dict[str, Callable[..., ServerOptimizer]] = {
    cls.name: cls for cls in (FedAvgOpt, FedAvgM, FedAdam, FedYogi, FedAdagrad)
}


def hyper_parameters(name: str) -> list[str]:
    """The keyword arguments optimiser ``name`` accepts, for error messages and docs."""
    factory = SERVER_OPTIMIZERS[name]
    return [f.name for f in dataclasses.fields(factory) if f.init]  # type: ignore[arg-type]


def build_server_optimizer(name: str, **hyper: Any) -> ServerOptimizer:
    """Build the optimiser the config names, reporting bad names/arguments as ConfigError."""
    if name not in SERVER_OPTIMIZERS:
        raise ConfigError(
            [f"{CONFIG_KEY}: unknown {name!r}; choose one of {sorted(SERVER_OPTIMIZERS)}"]
        )
    accepted = hyper_parameters(name)
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        raise ConfigError(
            [f"{CONFIG_KEY}: {name} does not take {unknown}; it accepts {sorted(accepted)}"]
        )
    return SERVER_OPTIMIZERS[name](**hyper)
