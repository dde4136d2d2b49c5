"""Flower client mods for tests: record what a client received and sent, inject faults.

Placed inside SecAgg+ (``simulate(..., client_mods=[...])``), a mod sees the plain fit
call and reply before masking, which is what the tests compare the server's view with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
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


FAULT_KINDS = ("crash", "hang", "nan", "shape", "keys")


def fault_mod(
    faults: dict[tuple[int, int], str], *, hang_seconds: float = 0.0
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """Misbehave in fit as told: ``{(server_round, partition): kind}``.

    ``crash`` raises before training; ``hang`` sleeps ``hang_seconds`` and then answers
    (too late); ``nan`` puts a NaN in the first delta array; ``shape`` cuts the first
    array to one row; ``keys`` drops the reply's ``fitres.num_examples`` record, so the
    reply is not a fit result at all.
    """
    unknown = set(faults.values()) - set(FAULT_KINDS)
    assert not unknown, f"unknown fault kinds {unknown}"

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]):  # type: ignore[no-untyped-def]
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        partition = int(ctxt.node_config["partition-id"])
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        kind = faults.get((int(fitins.config["server_round"]), partition))
        if kind == "crash":
            raise RuntimeError(f"injected crash of partition {partition}")
        if kind == "hang":
            time.sleep(hang_seconds)
        reply = call_next(msg, ctxt)
        if kind not in ("nan", "shape", "keys"):
            return reply
        if kind == "keys":
            del reply.content.metric_records["fitres.num_examples"]
            return reply
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        arrays = parameters_to_ndarrays(fitres.parameters)
        if kind == "nan":
            arrays[0] = arrays[0].copy()
            arrays[0].flat[0] = np.nan
        else:
            arrays[0] = arrays[0][:1]
        fitres.parameters = ndarrays_to_parameters(arrays)
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    return mod


def hold_after_reply(
    marker: Path, *, partition: int, server_round: int
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """After ``partition`` has computed (and kept) its ``server_round`` reply, write
    ``marker`` and hold the reply back, so a test can kill the run mid-round: the client
    has answered, the server has not heard it."""

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]):  # type: ignore[no-untyped-def]
        reply = call_next(msg, ctxt)
        if msg.metadata.message_type == MessageType.TRAIN:
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            here = int(ctxt.node_config["partition-id"]), int(fitins.config["server_round"])
            if here == (partition, server_round):
                marker.write_text("replied\n")
                time.sleep(3600)
        return reply

    return mod
