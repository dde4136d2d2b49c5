"""Client side of secure aggregation: Flower's ``secaggplus_mod``, used when asked.

The same ClientApp serves plain and secure rounds: a train message that carries SecAgg+
configuration goes through Flower's mod (which masks the reply), any other goes straight
to the client. A node whose policy requires secure aggregation refuses plain training.

Outside Flower's mod, the masked vectors of the collect-masked-vectors reply are
re-encoded from int64 to the narrowest unsigned dtype holding Flower's modulus (uint32
for 2³²; common/secagg_wire.py): the masking is Flower's, only the serialisation
changes, and the server widens them back before summing (server/secagg.py).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
)

from common.secagg_wire import narrow_reply


def is_secagg_message(msg: Message) -> bool:
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )


def mod_range(ctxt: Context) -> int:
    """The modulus Flower's mod reduced the masked values by (from its saved state)."""
    state = ctxt.state.config_records.get(RECORD_KEY_STATE)
    value = None if state is None else state.get("mod_range")  # SecAggPlusState.mod_range
    if not value:
        raise ValueError("SecAgg+ state holds no mod_range: cannot encode the masked vectors")
    return int(value)  # type: ignore[arg-type]


def secagg_when_requested(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ stages through Flower's mod, narrowing its masked vectors on the way out;
    leave every other message alone."""
    if not is_secagg_message(msg):
        return call_next(msg, ctxt)
    reply = secaggplus_mod(msg, ctxt, call_next)
    if reply.has_content():
        configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and Key.MASKED_PARAMETERS in configs:
            narrow_reply(reply, mod_range(ctxt))
    return reply
