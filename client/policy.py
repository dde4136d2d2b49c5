"""The organisation's local privacy policy, enforced on its node whatever the server asks.

An organisation states, in its node configuration file, what it will accept: DP-SGD
required, the largest ε it will ever spend (across every run on this node) and at which
δ, the smallest noise multiplier, whether secure aggregation is required and with how
many peers at least, whether it answers federated evaluation, and whether it sends
training statistics that DP does not cover. The client applies the policy to the run
config the server sent before any training, and refuses a round the policy forbids; its
ledger lives in a file on the node, so ε composes across runs. SECURITY.md says what
each setting protects against.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.config import RunConfig, describe_error, load_toml
from common.errors import ConfigError


class NodePolicy(BaseModel):
    """A node's configuration file (TOML, kebab-case), validated once at start-up."""

    # strict: TOML has real booleans and numbers, so `require-dp = "no"` is a mistake to
    # name, not a string to guess at.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=lambda n: n.replace("_", "-"),
        populate_by_name=True,
    )

    name: str = Field(
        description="The organisation's name, shown in the server's ledger and logs: "
        "letters, digits, '-' and '_' (1-64 characters), as `privatune keys node --name`."
    )
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
        False,
        description="Refuse to train for any request that did not arrive through the "
        "SecAgg+ protocol (whatever the run config claims).",
    )
    max_delta: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None,
        description="The δ this node's ledger is kept at, and the largest privacy.delta a "
        "run may ask for (larger: refused). Default: min(1e-5, 1/(10·N)), N this node's "
        "training rows. ε grows as δ shrinks, so the coordinator must not choose it.",
    )
    min_secagg_peers: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Under SecAgg+, send the masked update, and the key shares that unmask "
        "a sum, only while the session holds at least this many other nodes (the sum of "
        "one node is that node's update). Default: the session's reconstruction threshold "
        "minus one, never fewer than 1.",
    )
    federated_evaluation: bool = Field(
        False,
        description="Answer federated-evaluation requests with loss and accuracy (causal "
        "LMs: ROUGE/BLEU statistics) of the coordinator's adapter on this node's held-out "
        "rows. DP does not cover those rows: a coordinator that crafts adapters can query "
        "them without limit. Off: evaluation requests are refused and every row trains.",
    )
    eval_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2,
        description="With federated-evaluation: the share of this node's rows held out for "
        "it, drawn once with this node's own secret seed (state-dir/split.seed), so the "
        "same rows are held out in every run whatever the coordinator's config says.",
    )
    share_training_metrics: bool = Field(
        False,
        description="Under DP or SecAgg+, also send the mean training loss and the counts "
        "of too-long rows, empty Poisson batches and SecAgg+-clipped values. They are "
        "computed from the private rows without noise, so neither ε nor SecAgg+ covers "
        "them.",
    )
    allow_reproducible_noise: bool = Field(
        False,
        description="Accept runs with privacy.reproducible-noise, whose DP noise follows "
        "the coordinator's seed (so the coordinator can subtract it): research only.",
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

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ValueError(
                f"{name!r} may contain only letters, digits, '-' and '_' (1-64 characters), "
                'e.g. name = "hospital-a"'
            )
        return name

    @property
    def ledger_path(self) -> Path:
        return Path(self.state_dir) / "privacy_ledger.json"

    @property
    def audit_path(self) -> Path:
        return Path(self.state_dir) / "audit.jsonl"

    @property
    def split_seed_path(self) -> Path:
        return Path(self.state_dir) / "split.seed"

    def delta_for(self, num_examples: int) -> float:
        """The δ this node accounts at: its own, never the coordinator's."""
        if self.max_delta is not None:
            return self.max_delta
        return min(DEFAULT_MAX_DELTA, 1.0 / (10 * max(num_examples, 1)))


DEFAULT_MAX_DELTA = 1e-5


def load_policy(path: str | Path) -> NodePolicy:
    """Read and validate a node configuration file; every problem is named at once."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"node config {path} does not exist"])
    data = load_toml(path)
    problems: list[str] = []
    data_path = data.get("data-path")
    if isinstance(data_path, str) and not Path(data_path).exists():
        problems.append(f"data-path: {data_path} does not exist on this node")
    try:
        policy = NodePolicy.model_validate(data)
    except ValidationError as exc:
        problems[:0] = [describe_error(e, NodePolicy) for e in exc.errors()]
    if problems:
        raise ConfigError(problems, source=str(path))
    return policy


def violations(policy: NodePolicy, config: RunConfig, *, num_examples: int) -> list[str]:
    """Why this node must not train under ``config`` (empty: it may)."""
    found = []
    privacy = config.privacy
    if policy.require_dp and not privacy.enabled:
        found.append("the run has privacy.enabled = false but this node requires DP-SGD")
    if policy.require_secure_aggregation and not config.secure_aggregation.enabled:
        found.append("the run has secure aggregation off but this node requires it")
    if privacy.enabled:
        delta = policy.delta_for(num_examples)
        if privacy.delta > delta:
            found.append(
                f"the run asks for privacy.delta = {privacy.delta:g}, above this node's "
                f"δ {delta:g} (policy max-delta)"
            )
        if privacy.reproducible_noise and not policy.allow_reproducible_noise:
            found.append(
                "the run asks for privacy.reproducible-noise (DP noise the coordinator can "
                "recompute); this node refuses it (policy allow-reproducible-noise)"
            )
    return found


def apply_policy(policy: NodePolicy, config: RunConfig) -> RunConfig:
    """The run config as this node will train it, on its own data, with its noise floor.

    The node's lifetime budget (max-epsilon) is enforced by its ledger, next to the run's
    own budget (client/privacy.py).
    """
    floor = max(config.privacy.min_noise_multiplier, policy.min_noise_multiplier)
    share = config.privacy.share_training_metrics and policy.share_training_metrics
    privacy = config.privacy.model_copy(
        update={"min_noise_multiplier": floor, "share_training_metrics": share}
    )
    data = config.data.model_copy(update={"source": policy.data_path})
    return config.model_copy(update={"privacy": privacy, "data": data})


def split_seed(policy: NodePolicy) -> int:
    """This node's own seed for its held-out split: drawn once from OS entropy, then kept.

    The coordinator's training.seed must not decide which rows are held out (rows it
    could then move into the evaluation set, which DP does not cover, run after run).
    The file is created with a hard link, which fails if another process made it first,
    so concurrent ClientApp processes all end up with the one seed.
    """
    import os
    import secrets
    import tempfile

    path = policy.split_seed_path
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".split-seed-")
        try:
            os.write(fd, f"{secrets.randbits(63)}\n".encode())
            os.fsync(fd)
            os.close(fd)
            os.chmod(tmp, 0o600)
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except ValueError as exc:
        raise ConfigError(
            [
                f"{path}: not a seed ({exc}); restore it from a backup (a new seed would "
                "move rows between the training and held-out splits)"
            ]
        ) from None
