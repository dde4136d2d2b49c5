"""What an organisation's operator sees from `privatune node start` before any training.

Operator-facing cases, each the line an operator reads: the start-up banner names every
policy setting; an unreachable SuperLink is said once, with what to check; a bad
node.toml stops the node with every problem listed, exit 2, no traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client.policy import NodePolicy
from common.errors import PrivatuneError
from deploy.cli import node_banner, reachability


def _policy(tmp_path: Path) -> NodePolicy:
    return NodePolicy(
        name="org-banner",
        data_path=str(tmp_path / "rows.jsonl"),
        state_dir=str(tmp_path / "state"),
        require_dp=False,
        max_epsilon=3.25,
        min_noise_multiplier=0.75,
        require_secure_aggregation=True,
        max_delta=2e-6,
        min_secagg_peers=4,
        federated_evaluation=True,
        eval_fraction=0.35,
        share_training_metrics=True,
        allow_reproducible_noise=True,
        poll_interval=0.4,
        warm_worker=False,
        prefork=False,
    )


def test_banner_names_every_policy_setting(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    banner = node_banner(policy)
    expected = {
        "name": "node org-banner",
        "data_path": f"data {policy.data_path}",
        "state_dir": f"ledger {policy.ledger_path}",
        "require_dp": "DP required: False",
        "max_epsilon": "max ε 3.25 (lifetime)",
        "max_delta": "at δ 2e-06",
        "min_noise_multiplier": "min noise multiplier 0.75",
        "require_secure_aggregation": "SecAgg+ required: True",
        "min_secagg_peers": "min peers 4",
        "federated_evaluation": "federated evaluation: True",
        "eval_fraction": "held out 0.35",
        "share_training_metrics": "training metrics shared: True",
        "allow_reproducible_noise": "reproducible noise allowed: True",
        "warm_worker": "warm worker: False",
        "prefork": "preforked ClientApps: False",
        "poll_interval": "poll every 0.4 s",
    }
    # A new policy field must be added to the banner (and here).
    assert set(expected) == set(NodePolicy.model_fields)
    for field, text in expected.items():
        assert text in banner, (field, banner)


def test_unreachable_superlink_is_said_with_what_to_check() -> None:
    with socket.socket() as s:  # a port nobody listens on: bind, then close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    why = reachability(f"127.0.0.1:{port}", timeout=2)
    assert why is not None and "cannot reach the SuperLink" in why
    assert "Connection refused" in why and "firewall" in why


def test_reachable_superlink_gives_no_warning() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert reachability(f"127.0.0.1:{s.getsockname()[1]}", timeout=2) is None


@pytest.mark.parametrize("address", ["coordinator.example.org", "host:port"])
def test_malformed_superlink_address_is_bad_input(address: str) -> None:
    with pytest.raises(PrivatuneError, match="expected HOST:PORT"):
        reachability(address)


def test_bad_node_toml_lists_every_problem_exit_2(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a", "label": 0}\n')
    for name in ("ca.crt", "org.key"):  # present: the node checks its files first
        (tmp_path / name).write_text("placeholder\n")
    bad = tmp_path / "node.toml"
    bad.write_text(
        f'name = "org 1!"\nmax-epsilion = 3\nrequire-dp = "no"\n'
        f'data-path = "{rows}"\nstate-dir = "{tmp_path / "state"}"\n'
    )
    done = subprocess.run(
        [
            sys.executable, "-m", "privatune.cli", "node", "start",
            "--superlink", "127.0.0.1:9", "--ca", str(tmp_path / "ca.crt"),
            "--key", str(tmp_path / "org.key"), "--node-config", str(bad),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"invalid configuration in {bad}" in done.stderr
    for problem in (
        "require-dp: Input should be a valid boolean",
        "max-epsilion: unknown key; did you mean max-epsilon?",
        "name:",
    ):
        assert problem in done.stderr, done.stderr
    assert not (tmp_path / "state").exists()  # nothing written
