"""`coordinator run --resume`: the run config asks the ServerApp to resume, Flower accepts
the key, and a folder that cannot be resumed is refused before anything is submitted."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.config import RESUME_KEY, from_run_config, load_config
from common.errors import PrivatuneError
from deploy import cli as deploy_cli
from deploy.coordinator import write_run_config
from privatune.cli import build_parser
from server.app import _resume_asked

ROOT = Path(__file__).resolve().parents[2]


def test_resume_travels_in_the_run_config_and_is_not_a_config_key(tmp_path: Path) -> None:
    config = load_config(None, ["federation.rounds=3"])
    path = write_run_config(config, tmp_path / "out", tmp_path / "rc", resume=True)
    values = tomllib.loads(path.read_text())
    assert values[RESUME_KEY] is True
    assert from_run_config(values) == config  # the key is not read as a config override
    assert _resume_asked(SimpleNamespace(run_config=values))  # type: ignore[arg-type]
    fresh = tomllib.loads(write_run_config(config, tmp_path / "o", tmp_path / "r2").read_text())
    assert RESUME_KEY not in fresh and not _resume_asked(SimpleNamespace(run_config=fresh))  # type: ignore[arg-type]


def test_flower_app_declares_the_resume_key() -> None:
    """Flower rejects run-config keys the app does not declare (fuse_dicts)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["config"][RESUME_KEY] is False


def test_coordinator_run_resume_refuses_a_folder_without_checkpoint(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["coordinator", "run", "--keys", "k", "--state", str(tmp_path / "s"), "--output",
         str(tmp_path), "--resume"]
    )  # fmt: skip
    assert args.config is None and args.resume
    (tmp_path / "config.resolved.toml").write_text(load_config(None, []).to_toml())
    with pytest.raises(PrivatuneError, match="no checkpoint.json"):
        deploy_cli._coord_run(args)
    assert not (tmp_path / "s" / "runs").exists()  # nothing was submitted
