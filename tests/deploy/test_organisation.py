"""deploy/organisation.py: a node is a SuperNode in process isolation plus its own SuperExec."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from deploy.organisation import superexec_command, supernode_command


def _node(tmp_path: Path, *extra: str) -> dict:
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "org1.key").write_text("key")
    (tmp_path / "data.jsonl").write_text('{"text": "a", "label": "x"}\n')
    lines = ['name = "org1"', f'data-path = "{tmp_path / "data.jsonl"}"', 'state-dir = "state"']
    (tmp_path / "node.toml").write_text("\n".join([*lines, *extra]) + "\n")
    return {
        "superlink": "coordinator.example.org:9092",
        "ca": tmp_path / "ca.crt",
        "key": tmp_path / "org1.key",
        "node_config": tmp_path / "node.toml",
        "port": 9094,
    }


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_supernode_queues_tasks_for_its_own_superexec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    node, policy = supernode_command(**_node(tmp_path))
    execu = superexec_command(policy, port=9094)
    assert _value(node, "--isolation") == "process"
    assert _value(node, "--host") == "127.0.0.1"  # the Runtime API never leaves the machine
    assert execu[:3] == [sys.executable, "-m", "deploy.superexec"]
    assert _value(execu, "--runtime-api-address") == "127.0.0.1:9094"
    secret = Path(_value(node, "--superexec-auth-secret-file"))
    assert _value(execu, "--superexec-auth-secret-file") == str(secret)
    assert secret.parent == Path(policy.state_dir)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes()) == 64
    again, _ = supernode_command(**_node(tmp_path))
    assert secret.read_bytes() == Path(_value(again, "--superexec-auth-secret-file")).read_bytes()


def test_prefork_false_uses_flowers_own_superexec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _, policy = supernode_command(**_node(tmp_path, "prefork = false"))
    assert superexec_command(policy, port=9094)[0] == "flower-superexec"
