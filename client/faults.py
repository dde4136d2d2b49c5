"""A client that fails says who it is: the outermost mod turns an exception into an error
reply naming the client, so the server records which client crashed in which round
(server/exchange.py) instead of an anonymous node id.

The traceback stays on the node (its log); only the exception's type and message travel,
as Flower's own error replies do.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from client.node_config import NODE_CONFIG_FILE_KEY, PARTITION_ID_KEY
from common.errors import Refused
from common.protocol import failure_reason

log = logging.getLogger("privatune.client")


def client_name(ctxt: Context) -> str:
    """The id the client reports in its metrics: partition (simulation) or policy name."""
    partition = ctxt.node_config.get(PARTITION_ID_KEY)
    if partition is not None:
        return str(int(partition))
    policy_file = ctxt.node_config.get(NODE_CONFIG_FILE_KEY)
    if policy_file:
        try:
            from client.policy import load_policy

            return load_policy(str(policy_file)).name
        except Exception:  # noqa: BLE001 - a broken policy must not hide the first error
            pass
    return f"node-{ctxt.node_id}"


def name_failures_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Reply to a failure with an error that names this client."""
    try:
        return call_next(msg, ctxt)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a named error reply
        name = client_name(ctxt)
        if isinstance(exc, Refused):  # the node's decision: its reason, no traceback
            log.warning("client %s refuses %s: %s", name, msg.metadata.message_type, exc)
        else:
            log.exception("client %s failed on %s", name, msg.metadata.message_type)
        error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=failure_reason(name, exc))
        return Message(error, reply_to=msg)
