"""Flower's ``flower-superexec``, unchanged but for how it starts a task's process.

flwr 1.41's SuperExec starts every task with ``subprocess.Popen(["flwr-clientapp", ...])``
(``flwr/supercore/superexec/executor/subprocess_executor.py``): a fresh Python that
imports flwr (1.3-2 s here) before it can even ask for its message. A SecAgg+ round is
four messages per node, so that import alone was ~8 s of a 17.7 s deployed round. Flower's
warm executor pools, which would avoid it, exist only for Kubernetes and not for
ClientApps.

This launcher runs Flower's own SuperExec with that one ``Popen`` replaced by a fork of a
*forkserver* that imported Flower's ClientApp and ServerApp runtimes once, at start-up
(:mod:`multiprocessing`'s ``forkserver`` start method). Each task still gets its own
single-use process running Flower's own entry point (``flwr-clientapp``,
``flwr-serverapp``) with exactly the arguments Flower built, so isolation between tasks,
the task token and the exit handling are Flower's; only the import is paid once, and
the task process retries missing objects sooner (deploy/pull_backoff.py). The
forkserver never opens a connection, so no gRPC/HTTP state is shared across the fork.
Privatune's own modules are deliberately *not* preloaded: Flower loads the app from the
run's FAB, and a preloaded copy would shadow it.

Organisations' nodes and the coordinator both run it (deploy/organisation.py,
deploy/coordinator.py).

If a Flower upgrade no longer starts tasks with that ``Popen`` call, the launcher refuses
to start and says so, rather than silently patching something else.

    python -m deploy.superexec FLOWER_SUPEREXEC_ARGS...
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from multiprocessing.context import BaseContext
from typing import Any

import flwr.supercore.superexec.executor.subprocess_executor as flower_executor

from deploy.pull_backoff import shorten_pull_backoff

# Imported once in the forkserver, inherited by every ClientApp process forked from it.
PRELOAD = (
    "flwr.supernode.cli.flwr_clientapp",
    "flwr.supernode.runtime.run_clientapp",
    "flwr.clientapp",
    "flwr.client.mod",
    "flwr.server.workflow",  # SecAgg+ (both sides)
    "flwr.superlink.cli.flwr_serverapp",
    "pydantic",
    "numpy",
)
_POPEN = "subprocess.Popen("


def run_console_script(argv: list[str], quiet: bool) -> None:
    """In the forked child: run ``argv[0]``'s console-script entry point with ``argv``."""
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    shorten_pull_backoff()
    (script,) = entry_points(group="console_scripts", name=argv[0])
    sys.argv = list(argv)
    script.load()()


class ForkingPopen:
    """Stands in for ``subprocess`` in Flower's executor module: ``Popen`` forks instead.

    Returns the started :class:`multiprocessing.Process`; Flower's executor ignores the
    return value, and :meth:`reap` collects finished children so none linger as zombies.
    """

    DEVNULL = subprocess.DEVNULL

    def __init__(self, context: BaseContext) -> None:
        self._context = context
        self._children: list[Any] = []

    def Popen(self, args: Sequence[str], **kwargs: Any) -> Any:  # noqa: N802 - Flower's name
        self.reap()
        quiet = kwargs.get("stdout") == subprocess.DEVNULL
        child = self._context.Process(  # type: ignore[attr-defined]
            target=run_console_script, args=(list(args), quiet), daemon=True
        )
        child.start()
        self._children.append(child)
        return child

    def reap(self) -> None:
        self._children = [c for c in self._children if c.is_alive()]

    @property
    def running(self) -> int:
        self.reap()
        return len(self._children)


def install(preload: Sequence[str] = PRELOAD) -> ForkingPopen:
    """Point Flower's subprocess executor at a forkserver that has ``preload`` imported."""
    if _POPEN not in inspect.getsource(flower_executor):
        raise SystemExit(
            f"deploy/superexec.py: this flwr ({flower_executor.__name__}) no longer starts "
            f"tasks with {_POPEN}...); run plain flower-superexec instead"
        )
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    # Start the forkserver (and its imports) now, not when the first message arrives.
    from multiprocessing import forkserver

    forkserver.ensure_running()
    forking = ForkingPopen(context)
    flower_executor.subprocess = forking  # type: ignore[attr-defined]
    return forking


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.superexec FLOWER_SUPEREXEC_ARGS...``."""
    install()
    from flwr.supercore.cli.flower_superexec import flower_superexec

    sys.argv = ["flower-superexec", *(sys.argv[1:] if argv is None else argv)]
    flower_superexec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
