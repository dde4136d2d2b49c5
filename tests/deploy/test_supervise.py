"""Nothing outlives the supervisor: clean stop, kill -9, and a restart after either."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from common.errors import PrivatuneError
from deploy.supervise import _cmdline, clean_stale

SLEEPER = [sys.executable, "-c", "import time, sys; time.sleep(600)"]


def _supervisor(tmp_path: Path, tag: str) -> subprocess.Popen:
    """A supervisor of two sleepers (each tagged, so we can find them) in a new process."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from deploy.supervise import supervise
        cmd = lambda n: [sys.executable, "-c", "import time; time.sleep(600)", "{tag}", n]
        sys.exit(supervise([cmd("a"), cmd("b")], dict(os.environ), ready=lambda: None,
                           pidfile=Path({str(tmp_path / "processes.json")!r})))
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, "supervisor", tag], cwd=Path(__file__).parents[2]
    )


def _tagged(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            if cmd and tag in cmd and "-c" in cmd and cmd[-1] in ("a", "b"):
                found.append(int(entry.name))
    return found


def _wait(predicate, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _started(tmp_path: Path, tag: str) -> subprocess.Popen:
    sup = _supervisor(tmp_path, tag)
    assert _wait(lambda: len(_tagged(tag)) == 2), "children did not start"
    assert _wait(lambda: _recorded(tmp_path / "processes.json") == 2)
    return sup


def _recorded(pidfile: Path) -> int:
    try:
        return len(json.loads(pidfile.read_text())["children"])
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_supervisor_ends_its_children(tmp_path: Path) -> None:
    tag = f"kill9-{os.getpid()}"
    sup = _started(tmp_path, tag)
    sup.send_signal(signal.SIGKILL)
    sup.wait(timeout=10)
    assert _wait(lambda: not _tagged(tag)), f"left behind: {_tagged(tag)}"


def test_sigterm_ends_children_and_removes_the_pid_file(tmp_path: Path) -> None:
    tag = f"term-{os.getpid()}"
    sup = _started(tmp_path, tag)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert not _tagged(tag)
    assert not (tmp_path / "processes.json").exists()


def test_a_restart_ends_what_a_dead_supervisor_left(tmp_path: Path) -> None:
    """Children that survived their supervisor (no parent-death signal) are ended."""
    tag = f"stale-{os.getpid()}"
    children = [subprocess.Popen([*SLEEPER, tag, n], start_new_session=True) for n in "ab"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile = tmp_path / "processes.json"
    pidfile.write_text(
        json.dumps(
            {
                "supervisor": {"pid": dead.pid, "command": [sys.executable, "-c", "pass"]},
                "children": [{"pid": c.pid, "command": c.args} for c in children],
            }
        )
    )
    assert sorted(clean_stale(pidfile)) == sorted(c.pid for c in children)
    for child in children:
        assert child.wait(timeout=20) == -signal.SIGTERM
    assert not pidfile.exists()


def test_a_recycled_pid_is_not_killed(tmp_path: Path) -> None:
    """A PID in the file that now runs something else is left alone."""
    other = subprocess.Popen([*SLEEPER, "unrelated"])
    try:
        pidfile = tmp_path / "processes.json"
        pidfile.write_text(
            json.dumps({"supervisor": {}, "children": [{"pid": other.pid, "command": ["x", "y"]}]})
        )
        assert clean_stale(pidfile) == []
        assert other.poll() is None
    finally:
        other.kill()


def test_a_second_start_while_the_first_lives_is_refused(tmp_path: Path) -> None:
    tag = f"twice-{os.getpid()}"
    sup = _started(tmp_path, tag)
    try:
        with pytest.raises(PrivatuneError, match=rf"already running as PID {sup.pid}"):
            clean_stale(tmp_path / "processes.json")
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=30)
