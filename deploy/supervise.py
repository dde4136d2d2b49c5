"""Run a role's processes as one unit: if any of them ends, end the others.

A coordinator is a SuperLink plus the SuperExec that runs its ServerApps; an
organisation's node is its warm worker plus the SuperNode. Half of either is worse than
none (a SuperNode whose worker died would fail every round), so ``privatune coordinator
start`` and ``privatune node start`` run their pair under :func:`supervise`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def supervise(commands: list[list[str]], env: dict[str, str], *, ready: Callable[[], None]) -> int:
    """Start ``commands[0]``, wait for ``ready()``, start the rest; stop all when one ends.

    Returns the exit code of whichever ended first (SIGTERM/SIGINT end all cleanly).
    """
    first = subprocess.Popen(commands[0], env=env)
    procs = [first]
    stop = {"requested": False}

    def _terminate(*_: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        ready()
        procs.extend(subprocess.Popen(cmd, env=env) for cmd in commands[1:])
        while not stop["requested"]:
            ended = [p for p in procs if p.poll() is not None]
            if ended:
                return int(ended[0].returncode or 0)
            time.sleep(0.5)
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
