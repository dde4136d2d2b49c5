"""node.toml: every problem named at once, by its key, with node.toml's own keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.policy import load_policy
from common.errors import ConfigError

BASE = 'name = "org1"\ndata-path = "{data}"\nstate-dir = "{state}"\n'

# (extra lines, what the operator must read)
BAD = [
    ("max-epsilion = 3", "max-epsilion: unknown key; did you mean max-epsilon?"),
    ('require-dp = "no"', "require-dp: Input should be a valid boolean (got 'no')"),
    ("max-epsilon = true", "max-epsilon: Input should be a valid number"),
    ("max-epsilon = -1", "max-epsilon: Input should be greater than 0"),
    ("federated-evaluation = 1", "federated-evaluation: Input should be a valid boolean"),
    ("min-secagg-peers = 0", "min-secagg-peers: Input should be greater than or equal to 1"),
    ("max-delta = 1.5", "max-delta: Input should be less than 1"),
    ("poll-interval = 10", "poll-interval: Input should be less than or equal to 3"),
    ("frobnicate = 1", "frobnicate: unknown key; valid keys here: "),
]


def _write(tmp_path: Path, body: str, *, name: str = "org1") -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    text = BASE.format(data=data, state=tmp_path / "state").replace("org1", name, 1)
    path = tmp_path / "node.toml"
    path.write_text(text + body + "\n")
    return path


@pytest.mark.parametrize(("line", "message"), BAD, ids=[b[0].split()[0] for b in BAD])
def test_bad_node_config_names_the_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(_write(tmp_path, line))
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems
    assert str(tmp_path / "node.toml") in str(info.value)


def test_unknown_key_lists_node_keys_not_run_config_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(_write(tmp_path, "frobnicate = 1"))
    (problem,) = info.value.problems
    assert "max-epsilon" in problem and "require-dp" in problem
    assert "federation" not in problem and "central-dp" not in problem


@pytest.mark.parametrize("name", ["org 1!", "", "a/b", "x" * 65])
def test_name_is_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="letters, digits, '-' and '_'"):
        load_policy(_write(tmp_path, "", name=name))


def test_every_problem_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, 'max-epsilion = 3\nrequire-dp = "no"', name="org 1!")
    path.write_text(path.read_text().replace(str(tmp_path / "data.jsonl"), "missing.jsonl"))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    keys = sorted(p.split(":")[0] for p in info.value.problems)
    assert keys == ["data-path", "max-epsilion", "name", "require-dp"]


def test_toml_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "max-epsilon = = 3")
    with pytest.raises(ConfigError, match=r"node\.toml:4: not valid TOML"):
        load_policy(path)


def test_a_good_node_config_loads(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "max-epsilon = 4\nrequire-secure-aggregation = true"))
    assert policy.max_epsilon == 4.0 and policy.require_secure_aggregation
    assert policy.require_dp is True and policy.federated_evaluation is False
