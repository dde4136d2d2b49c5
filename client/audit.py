"""The node's audit log: one line for every message the node sends.

Outermost Flower client mod, so it sees each reply exactly as it leaves (after SecAgg+
masking, the masked vectors already narrowed to uint32 by client/secagg.py): run, round,
kind, the run key its privacy ledger tags the run with, the names, shapes and dtypes of
every array, the names of every metric and config value, the byte count and the SHA-256
of the serialised content.
An organisation can show from this file that nothing but adapter arrays and named metrics
left its premises.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.common.serde import recorddict_to_proto

from common import protocol

AUDIT_PATH_KEY = "audit-log"


def describe(message: Message) -> dict[str, Any]:
    """What a message carries, without its values."""
    content = message.content
    payload = recorddict_to_proto(content).SerializeToString(deterministic=True)
    arrays = [
        {"record": rname, "name": aname, **_shape(arr)}
        for rname, record in content.array_records.items()
        for aname, arr in record.items()
    ]
    metrics = {name: sorted(record.keys()) for name, record in content.metric_records.items()}
    configs = {name: sorted(record.keys()) for name, record in content.config_records.items()}
    return {
        "arrays": arrays,
        "metrics": metrics,
        "configs": configs,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


def _shape(array: Any) -> dict[str, Any]:
    """Shape and dtype; legacy-layout arrays carry them inside their .npy bytes."""
    if array.shape or not array.data:
        return {"shape": list(array.shape), "dtype": array.dtype, "bytes": len(array.data)}
    import io

    import numpy as np

    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        stream = io.BytesIO(array.data)
        shape, _, dtype = readers[np.lib.format.read_magic(stream)](stream)
    except (ValueError, KeyError):
        return {"shape": [], "dtype": "bytes", "bytes": len(array.data)}
    return {"shape": list(shape), "dtype": str(dtype), "bytes": len(array.data)}


def audit_line(message: Message, reply_to: Message) -> dict[str, Any]:
    meta = reply_to.metadata
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": meta.run_id,
        "round": meta.group_id,
        "kind": meta.message_type,
        "stage": _stage(reply_to),
        "error": message.has_error(),
        **(_safe_describe(message) if message.has_content() else {"bytes": 0}),
    }


def _safe_describe(message: Message) -> dict[str, Any]:
    """Never let a bug in describing a message stop it being logged (bytes and hash)."""
    try:
        return describe(message)
    except Exception as exc:  # noqa: BLE001 - the log line says what went wrong
        payload = recorddict_to_proto(message.content).SerializeToString(deterministic=True)
        return {
            "describe_error": repr(exc),
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }


def _stage(message: Message) -> str | None:
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    if not message.has_content():
        return None
    record = message.content.config_records.get(RECORD_KEY_CONFIGS)
    return None if record is None else str(record.get(Key.STAGE, ""))


def _run_key(message: Message) -> str | None:
    """The run key the ledger tags its entries with, if the request carries it (fit
    instructions do), so that audit lines and ledger entries can be matched."""
    if not message.has_content():
        return None
    for record in message.content.config_records.values():
        value = record.get(protocol.RUN_KEY)
        if isinstance(value, str):
            return value
    return None


def append(path: Path, line: dict[str, Any]) -> None:
    """One line, flushed to disk; the file readable by the node's own user only (it names
    every run and round the node took part in, as its ledger does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def audit_mod(
    msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Log every outgoing reply when the node config names an audit log."""
    stage = _stage(msg)  # the request's stage names what the reply answers
    reply = call_next(msg, ctxt)
    target = ctxt.node_config.get(AUDIT_PATH_KEY)
    if target:
        line = audit_line(reply, msg)
        line["stage"] = stage
        line["run_key"] = _run_key(msg)
        append(Path(str(target)), line)
    return reply
