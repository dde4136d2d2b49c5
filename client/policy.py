"""The organisation's local privacy policy, enforced on its node whatever the server asks.

An organisation states, in its node configuration file, what it will accept: DP-SGD
required, the largest ε it will ever spend (across every run on this node), the smallest
noise multiplier, and whether secure aggregation is required. The client applies the
policy to the run config the server sent before any training, and refuses a round the
policy forbids; its ledger lives in a file on the node, so ε composes across runs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import RunConfig, _describe
from common.errors import ConfigError


class NodePolicy(BaseModel):
    """A node's configuration file (TOML, kebab-case), validated once at start-up."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=lambda n: n.replace("_", "-"), populate_by_name=True
    )

    name: str = Field(description="The organisation's name, shown in the server's ledger.")
    data_path: str = Field(description="This node's own data file or folder.")
    state_dir: str = Field(
        description="Folder for the privacy ledger and the audit log (kept across runs)."
    )
    require_dp: bool = Field(True, description="Refuse to train without DP-SGD.")
    max_epsilon: Annotated[float, Field(gt=0)] = Field(
        8.0, description="The most ε this node ever spends, over every run."
    )
    min_noise_multiplier: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Refuse rounds whose σ would be below this."
    )
    require_secure_aggregation: bool = Field(
        False, description="Refuse to send an update that is not securely aggregated."
    )
    poll_interval: Annotated[float, Field(ge=0.01, le=3.0)] = Field(
        0.25,
        description="Seconds an idle node waits before asking the coordinator for work "
        "again. Flower's SuperNode has a fixed 3 s here, and each of a SecAgg+ round's four "
        "messages waits on average half of it; deploy/supernode.py shortens it.",
    )
    warm_worker: bool = Field(
        True,
        description="Train in one long-lived worker process that keeps the model loaded "
        "across rounds (client/worker.py); false trains in the fresh process Flower starts "
        "for every message, which re-imports torch and reloads the model each round.",
    )

    prefork: bool = Field(
        True,
        description="Start each message's ClientApp process as a fork of one that already "
        "imported Flower (deploy/superexec.py) instead of a fresh Python, which pays the "
        "1-2 s import four times a SecAgg+ round; false uses Flower's own launcher.",
    )

    @property
    def ledger_path(self) -> Path:
        return Path(self.state_dir) / "privacy_ledger.json"

    @property
    def audit_path(self) -> Path:
        return Path(self.state_dir) / "audit.jsonl"


def load_policy(path: str | Path) -> NodePolicy:
    """Read and validate a node configuration file; every problem is named at once."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"node config {path} does not exist"])
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    try:
        policy = NodePolicy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()], source=str(path)) from None
    if not Path(policy.data_path).exists():
        raise ConfigError([f"data-path: {policy.data_path} does not exist on this node"], str(path))
    return policy


def violations(policy: NodePolicy, config: RunConfig) -> list[str]:
    """Why this node must not train under ``config`` (empty: it may)."""
    found = []
    privacy = config.privacy
    if policy.require_dp and not privacy.enabled:
        found.append("the run has privacy.enabled = false but this node requires DP-SGD")
    if policy.require_secure_aggregation and not config.secure_aggregation.enabled:
        found.append("the run has secure aggregation off but this node requires it")
    return found


def apply_policy(policy: NodePolicy, config: RunConfig) -> RunConfig:
    """The run config as this node will train it, on its own data, with its noise floor.

    The node's lifetime budget (max-epsilon) is enforced by its ledger, next to the run's
    own budget (client/privacy.py).
    """
    floor = max(config.privacy.min_noise_multiplier, policy.min_noise_multiplier)
    privacy = config.privacy.model_copy(update={"min_noise_multiplier": floor})
    data = config.data.model_copy(update={"source": policy.data_path})
    return config.model_copy(update={"privacy": privacy, "data": data})
