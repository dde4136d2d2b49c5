"""deploy/superexec.py: Flower's SuperExec, its task processes forked from a preloaded server."""

from __future__ import annotations

import inspect
import multiprocessing
import subprocess
import sys

import flwr.supercore.superexec.executor.subprocess_executor as flower_executor
import pytest

from deploy import superexec
from deploy.superexec import ForkingPopen


@pytest.fixture(scope="module")
def forking() -> ForkingPopen:
    # No preload: these tests check the launching, not the import saving.
    return ForkingPopen(multiprocessing.get_context("forkserver"))


def test_flower_still_starts_tasks_with_popen() -> None:
    """If a Flower upgrade changes how tasks start, this fails before any node is broken."""
    assert "subprocess.Popen(" in inspect.getsource(flower_executor.SubprocessExecutor.launch)


def test_forked_task_runs_flowers_entry_point_with_flowers_arguments(
    forking: ForkingPopen,
) -> None:
    child = forking.Popen(["flwr-clientapp", "--help"])
    child.join(timeout=60)
    assert child.exitcode == 0  # argparse printed Flower's help and exited cleanly
    bad = forking.Popen(["flwr-clientapp", "--no-such-flag"], stdout=subprocess.DEVNULL)
    bad.join(timeout=60)
    assert bad.exitcode == 2  # Flower's own argument parser refused it
    assert forking.running == 0  # finished children are reaped


def test_unknown_command_fails_the_task_not_the_launcher(forking: ForkingPopen) -> None:
    child = forking.Popen(["no-such-flower-command"], stdout=subprocess.DEVNULL)
    child.join(timeout=60)
    assert child.exitcode not in (0, None)


def test_install_points_flowers_executor_at_the_forkserver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flower_executor, "subprocess", flower_executor.subprocess)
    started: list[list[str]] = []
    monkeypatch.setattr(ForkingPopen, "Popen", lambda self, args, **kw: started.append(list(args)))
    forking = superexec.install(preload=())
    assert flower_executor.subprocess is forking
    spec = flower_executor.ExecutionSpec(
        task_type=flower_executor.TaskType.CLIENT_APP,
        runtime_api_address="127.0.0.1:9094",
        token="t0k3n",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=None,
        suppress_output=False,
        task_id=1,
    )
    assert flower_executor.SubprocessExecutor().launch(spec).status == "accepted"
    (args,) = started
    assert args[0] == "flwr-clientapp" and "--token" in args and "t0k3n" in args
    assert "--insecure" in args


def test_the_launcher_refuses_a_flower_that_no_longer_uses_popen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(superexec.inspect, "getsource", lambda module: "nothing")
    with pytest.raises(SystemExit, match="run plain flower-superexec"):
        superexec.install(preload=())


def test_preloaded_modules_exist() -> None:
    """A typo here would silently cost the import again (the forkserver ignores failures)."""
    import importlib

    for name in superexec.PRELOAD:
        assert importlib.import_module(name) is sys.modules[name]
