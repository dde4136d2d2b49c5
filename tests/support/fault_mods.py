"""Flower client mods for tests: record what a client received and sent, inject dropouts.

Placed inside SecAgg+ (``simulate(..., client_mods=[...])``), a mod sees the plain fit
call and reply before masking, which is what the tests compare the server's view with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat


def recording_mod(
    folder: Path, *, fail: frozenset[int] = frozenset(), fail_rounds: frozenset[int] = frozenset()
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """Save each fit's received adapter, delta and weight; raise for ``fail`` partitions."""

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]):  # type: ignore[no-untyped-def]
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        partition = int(ctxt.node_config["partition-id"])
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        server_round = int(fitins.config["server_round"])
        if partition in fail and server_round in fail_rounds:
            raise RuntimeError(f"injected dropout of partition {partition}")
        reply = call_next(msg, ctxt)
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        received = parameters_to_ndarrays(fitins.parameters)
        delta = parameters_to_ndarrays(fitres.parameters)
        np.savez(
            folder / f"r{server_round}-p{partition}.npz",
            *received,
            *delta,
            weight=np.array(fitres.num_examples),
            node=np.array(msg.metadata.dst_node_id, dtype=np.uint64),
            count=np.array(len(received)),
        )
        return reply

    return mod


def load_record(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    """(received, delta, weight, node id) saved by :func:`recording_mod`."""
    data = np.load(path)
    count = int(data["count"])
    arrays = [data[f"arr_{i}"] for i in range(2 * count)]
    return arrays[:count], arrays[count:], int(data["weight"]), int(data["node"])
