"""Where privatune's progress lines go: one handler on the ``privatune`` logger.

The command line sends them to stderr; a deployed ServerApp, which runs in Flower's own
process, sends them to stdout, which Flower streams back to ``privatune coordinator
run``. Either way Flower's own INFO lines show only when verbose.
"""

from __future__ import annotations

import logging
from typing import TextIO

FORMAT = "%(asctime)s privatune %(levelname)s %(message)s"


def route_progress(stream: TextIO, *, verbose: bool, level: int = logging.INFO) -> None:
    """Our lines on ``stream`` at ``level`` (and only there); Flower's at WARNING unless
    ``verbose``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    ours = logging.getLogger("privatune")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    logging.getLogger("flwr").setLevel(logging.DEBUG if verbose else logging.WARNING)
