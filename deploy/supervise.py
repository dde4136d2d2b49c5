"""Run a role's processes as one unit: if any of them ends, end the others.

A coordinator is a SuperLink plus the SuperExec that runs its ServerApps; an
organisation's node is its warm worker plus the SuperNode and its SuperExec. Half of
either is worse than none (a SuperNode whose worker died would fail every round), so
``privatune coordinator start`` and ``privatune node start`` run their processes under
:func:`supervise`.

Nothing may outlive the supervisor, whatever ends it:

- a clean stop (SIGTERM, SIGINT, one child ending) terminates each child's whole
  process group (each child leads its own, so what it started goes too);
- ``kill -9`` of the supervisor cannot be caught, so every child is started with the
  kernel's parent-death signal (Linux ``PR_SET_PDEATHSIG``): it gets SIGTERM the
  moment the supervisor dies;
- and in case the machine did something neither covers (another OS, a child that
  ignored the signal), the supervisor writes its children's PIDs to a file in the state
  folder; the next start ends whichever of them still run before starting anew, and
  refuses to start twice while the first supervisor lives.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common.atomic import write_text_atomic
from common.errors import PrivatuneError

PIDFILE = "processes.json"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """``preexec_fn``: SIGTERM this child when ``parent`` dies (Linux; elsewhere no-op)."""

    def arm() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def _cmdline(pid: int) -> list[str] | None:
    """The running process's argv, or None if no such process (or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def _same(pid: int, command: list[str]) -> bool:
    """``pid`` still runs ``command`` (so it is ours, not a recycled PID)."""
    running = _cmdline(pid)
    return running is not None and running[-len(command[1:]) :] == command[1:]


def clean_stale(pidfile: Path) -> list[int]:
    """End the processes a previous, now dead, supervisor left running; their PIDs.

    Refuses (PrivatuneError) when that supervisor is still alive: two copies of one
    node would share its state folder, its ledger and its ports.
    """
    try:
        recorded = json.loads(pidfile.read_text())
    except (OSError, ValueError):
        return []
    supervisor = recorded.get("supervisor", {})
    if supervisor.get("pid") != os.getpid() and _same(
        int(supervisor.get("pid", 0)), supervisor.get("command", [])
    ):
        raise PrivatuneError(
            f"already running as PID {supervisor['pid']} (see {pidfile}); stop it first "
            f"(kill {supervisor['pid']}), or use another state folder"
        )
    stale = [
        int(c["pid"]) for c in recorded.get("children", []) if _same(int(c["pid"]), c["command"])
    ]
    for pid in stale:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_cmdline(pid) for pid in stale):
        time.sleep(0.2)
    for pid in stale:
        if _cmdline(pid):
            _signal_group(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return stale


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _record(pidfile: Path, procs: list[subprocess.Popen], commands: list[list[str]]) -> None:
    record = {
        "supervisor": {"pid": os.getpid(), "command": sys.argv},
        "children": [{"pid": p.pid, "command": c} for p, c in zip(procs, commands, strict=False)],
    }
    write_text_atomic(pidfile, json.dumps(record, indent=2))


def supervise(
    commands: list[list[str]],
    env: dict[str, str],
    *,
    ready: Callable[[], None],
    pidfile: Path | None = None,
) -> int:
    """Start ``commands[0]``, wait for ``ready()``, start the rest; stop all when one ends.

    Returns the exit code of whichever ended first (SIGTERM/SIGINT end all cleanly).
    With ``pidfile``, processes left by an earlier supervisor are ended first (their
    PIDs printed), and this one's children are recorded there while they run.
    """
    if pidfile is not None:
        stale = clean_stale(pidfile)
        if stale:
            print(
                f"stopped {len(stale)} processes left by an earlier start "
                f"(PIDs {', '.join(map(str, stale))})",
                flush=True,
            )
    me = os.getpid()

    def start(command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command, env=env, start_new_session=True, preexec_fn=_die_with_parent(me)
        )

    stop = {"requested": False}

    def _terminate(*_: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    procs = [start(commands[0])]
    try:
        if pidfile is not None:
            _record(pidfile, procs, commands)
        ready()
        procs.extend(start(cmd) for cmd in commands[1:])
        if pidfile is not None:
            _record(pidfile, procs, commands)
        while not stop["requested"]:
            ended = [p for p in procs if p.poll() is not None]
            if ended:
                return int(ended[0].returncode or 0)
            time.sleep(0.5)
        return 0
    finally:
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)
