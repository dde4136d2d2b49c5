"""Client side of secure aggregation: Flower's ``secaggplus_mod``, used when asked.

The same ClientApp serves plain and secure rounds: a train message that carries SecAgg+
configuration goes through Flower's mod (which masks the reply), any other goes straight
to the client. A node whose policy requires secure aggregation refuses plain training.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS


def is_secagg_message(msg: Message) -> bool:
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )


def secagg_when_requested(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ stages through Flower's mod; leave every other message alone."""
    if is_secagg_message(msg):
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)
