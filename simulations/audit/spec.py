"""What an audit plants and compares: light, so the command line can show its defaults
without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import PrivatuneError

#: The audit's federation when no --config is given (tuned so the attack works without DP).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "audit.toml"


@dataclass(frozen=True)
class AuditSpec:
    """What to plant and which runs to compare."""

    members: int = 30
    non_members: int = 60
    client: int = 0
    repeats: int = 1
    seed: int = 1234
    epsilons: tuple[float, ...] = (8.0, 1.0)
    min_auc: float = 0.8
    num_candidates: int = 100  # causal LM: pins ranked per canary (true one included)

    def __post_init__(self) -> None:
        problems = [
            f"{flag} must be at least {low}, got {value}"
            for flag, value, low in (
                ("--canaries", self.members, 1),
                ("--non-members", self.non_members, 1),
                ("--repeats", self.repeats, 1),
                ("--candidates", self.num_candidates, 2),
            )
            if value < low
        ]
        problems += [f"--epsilon must be positive, got {e}" for e in self.epsilons if e <= 0]
        if not 0.5 <= self.min_auc <= 1.0:
            problems.append(f"--min-auc must be between 0.5 and 1, got {self.min_auc}")
        if problems:
            raise PrivatuneError("; ".join(problems))
