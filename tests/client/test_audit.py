"""The node's audit log: one line per reply, with names, shapes, bytes and a hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common import recorddict_compat as compat

from client.audit import AUDIT_PATH_KEY, audit_mod, describe


@pytest.fixture(autouse=True)
def task_identity():  # type: ignore[no-untyped-def]
    """Flower builds Messages only inside a task; give this test process an identity."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)  # noqa: SLF001
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved  # noqa: SLF001


def _reply_content() -> RecordDict:
    arrays = [np.zeros((3, 2), np.float32), np.ones(4, np.float32)]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 7, {"train_loss": 0.5})
    return compat.fitres_to_recorddict(res, keep_input=False)


def test_describe_names_shapes_and_hashes_the_serialised_content() -> None:
    """Legacy replies carry .npy bytes; the log still shows each array's real shape."""
    content = _reply_content()
    msg = Message(content, dst_node_id=1, message_type=MessageType.TRAIN)
    line = describe(msg)
    assert [a["shape"] for a in line["arrays"]] == [[3, 2], [4]]
    assert all(a["dtype"] == "float32" for a in line["arrays"])
    payload = recorddict_to_proto(content).SerializeToString(deterministic=True)
    assert line["bytes"] == len(payload)
    assert line["sha256"] == hashlib.sha256(payload).hexdigest()
    assert line["configs"]["fitres.metrics"] == ["train_loss"]


def test_audit_mod_writes_one_line_per_reply(tmp_path: Path) -> None:
    """Every reply passing through the mod is logged; without a path nothing is written."""
    log = tmp_path / "state" / "audit.jsonl"
    request = Message(RecordDict(), dst_node_id=1, message_type=MessageType.TRAIN)

    def answer(msg: Message, _ctxt: Context) -> Message:
        return Message(_reply_content(), reply_to=msg)

    for config in ({AUDIT_PATH_KEY: str(log)}, {AUDIT_PATH_KEY: str(log)}, {}):
        ctxt = Context(run_id=1, node_id=1, node_config=config, state=RecordDict(), run_config={})
        audit_mod(request, ctxt, answer)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["kind"] == MessageType.TRAIN and lines[0]["stage"] is None
    assert lines[0]["sha256"] == lines[1]["sha256"]


def test_audit_log_is_private_and_names_the_ledgers_run_key(tmp_path: Path) -> None:
    """0600 like the ledger; the run key of the fit instruction, as the ledger tags it."""
    import stat

    from flwr.app import ConfigRecord

    from common import protocol

    log = tmp_path / "state" / "audit.jsonl"
    content = RecordDict({"fitins.config": ConfigRecord({protocol.RUN_KEY: "abc123"})})
    request = Message(content, dst_node_id=1, message_type=MessageType.TRAIN)
    ctxt = Context(
        run_id=1, node_id=1, node_config={AUDIT_PATH_KEY: str(log)}, state=RecordDict(),
        run_config={},
    )  # fmt: skip
    audit_mod(request, ctxt, lambda msg, _c: Message(_reply_content(), reply_to=msg))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert line["run_key"] == "abc123"
