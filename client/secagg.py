"""Client side of secure aggregation: Flower's ``secaggplus_mod``, guarded by the node.

The same ClientApp serves plain and secure rounds: a train message that carries SecAgg+
configuration goes through Flower's mod (which masks the reply), any other goes straight
to the client. Flower's mod trusts the coordinator's instructions; this guard checks
them first, on the node, because the coordinator is the party SecAgg+ protects against:

- **Enough peers.** A sum of one node is that node's update. The node sends its masked
  vector (collect stage) and the shares that unmask a sum (unmask stage) only while the
  session holds at least ``min-secagg-peers`` other nodes (node policy; default the
  session's reconstruction threshold minus one, never fewer than 1).
- **A majority threshold.** The reconstruction threshold must exceed half the shares,
  so no two disjoint groups of a node's peers can each unmask it.
- **An honest unmask request.** This node must be listed active, no node both active
  and dead (whose two shares together would unmask that node alone), and only nodes
  of this session.
- **No replay into another sum.** The training request runs inside a
  :class:`SecureSession` naming the session's participants, which the client records
  with its reply (client/replay.py): the same update is never summed with another set
  of nodes, and a replayed session must unmask the same set as the first.
- **Only through the protocol.** The session exists only while this guard runs Flower's
  mod, in this process: a plain train message whose config merely claims SecAgg+ has
  none, so a node that requires secure aggregation refuses it (client/app.py).

A node that refuses a secure round raises before its masked vector exists (client/app.py),
so it sends nothing into the sum; Flower's mod then never reaches the unmask stage for
it. Outside Flower's mod, the masked vectors of the collect-masked-vectors reply are
re-encoded from int64 to the narrowest unsigned dtype holding Flower's modulus (uint32
for 2³²; common/secagg_wire.py): the masking is Flower's, only the serialisation changes,
and the server widens them back before summing (server/secagg.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)

from client.node_config import NODE_CONFIG_FILE_KEY
from client.replay import question
from common.errors import Refused
from common.secagg_wire import narrow_reply

GUARD_STATE = "privatune.secagg"  # this node's own record of the session, in its Context


class SecAggRefused(Refused):
    """A SecAgg+ instruction this node will not follow: it would expose an update."""


@dataclass(frozen=True)
class SecureSession:
    """The SecAgg+ session a training request arrived through: this node and the peers
    whose masked vectors its own will be summed with."""

    node_id: int
    participants: frozenset[int]

    def to_wire(self) -> list[int]:
        """For the node's own worker process (client/worker.py), never for the server."""
        return [self.node_id, *sorted(self.participants - {self.node_id})]

    @classmethod
    def from_wire(cls, value: list[int]) -> SecureSession:
        return cls(int(value[0]), frozenset(int(v) for v in value))


_SESSION: ContextVar[SecureSession | None] = ContextVar("privatune_secure_session", default=None)


def current_session() -> SecureSession | None:
    """The SecAgg+ session the running training request came through (None: plain)."""
    return _SESSION.get()


@contextmanager
def secure_session(session: SecureSession | None) -> Iterator[None]:
    token = _SESSION.set(session)
    try:
        yield
    finally:
        _SESSION.reset(token)


def is_secagg_message(msg: Message) -> bool:
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )


def _flower_state(ctxt: Context) -> ConfigRecord:
    return ctxt.state.config_records.get(RECORD_KEY_STATE) or ConfigRecord()


def mod_range(ctxt: Context) -> int:
    """The modulus Flower's mod reduced the masked values by (from its saved state)."""
    value = _flower_state(ctxt).get("mod_range")  # SecAggPlusState.mod_range
    if not value:
        raise ValueError("SecAgg+ state holds no mod_range: cannot encode the masked vectors")
    return int(value)  # type: ignore[arg-type]


def _policy_floor(ctxt: Context) -> int | None:
    policy_file = ctxt.node_config.get(NODE_CONFIG_FILE_KEY)
    if not policy_file:
        return None
    from client.policy import load_policy

    return load_policy(str(policy_file)).min_secagg_peers


def _peer_floor(ctxt: Context, threshold: int) -> int:
    """The fewest other nodes this node's update may be summed with."""
    floor = _policy_floor(ctxt)
    return floor if floor is not None else max(1, threshold - 1)


def _ints(value: Any) -> list[int]:
    return [int(v) for v in cast(list, value)]


def _check_setup(ctxt: Context, configs: ConfigRecord) -> None:
    threshold = int(cast(int, configs[Key.THRESHOLD]))
    shares = int(cast(int, configs[Key.SHARE_NUMBER]))
    sample = int(cast(int, configs[Key.SAMPLE_NUMBER]))
    if 2 * threshold <= shares:
        raise SecAggRefused(
            f"secure aggregation: reconstruction threshold {threshold} of {shares} shares is "
            "not a majority (two disjoint groups of peers could each unmask a node)"
        )
    _enough("the session samples", sample - 1, _peer_floor(ctxt, threshold))


def _enough(what: str, others: int, floor: int) -> None:
    if others < floor:
        raise SecAggRefused(
            f"secure aggregation: {what} {others} other node(s); this node sends its update "
            f"only into a sum of at least {floor} others (policy min-secagg-peers)"
        )


def _threshold(ctxt: Context) -> int:
    return int(cast(int, _flower_state(ctxt).get("threshold") or 0))


def _check_unmask(ctxt: Context, configs: ConfigRecord, node_id: int) -> frozenset[int]:
    active = _ints(configs[Key.ACTIVE_NODE_ID_LIST])
    dead = _ints(configs[Key.DEAD_NODE_ID_LIST])
    known = set(_ints(_flower_state(ctxt).get("public_keys_dict:K") or []))
    problems = []
    if node_id not in active:
        problems.append("this node is not listed as active")
    if set(active) & set(dead):
        problems.append(f"nodes {sorted(set(active) & set(dead))} are listed active and dead")
    if len(set(active)) != len(active) or len(set(dead)) != len(dead):
        problems.append("a node is listed twice")
    if not (set(active) | set(dead)) <= known:
        problems.append(f"nodes {sorted((set(active) | set(dead)) - known)} are not in it")
    if problems:
        raise SecAggRefused(f"secure aggregation: unmask request refused: {'; '.join(problems)}")
    _enough("the sum to unmask holds", len(active) - 1, _peer_floor(ctxt, _threshold(ctxt)))
    return frozenset(active)


def secagg_guard(ledger_dir: Path | None = None) -> Mod:
    """The mod that runs SecAgg+ stages through Flower's mod, guarded (see the module doc).

    ``ledger_dir``: where a simulation keeps its virtual clients' ledgers and replies
    (client/ledger_store.py), the same folder the client app is given.
    """

    def secagg_when_requested(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if not is_secagg_message(msg):
            return call_next(msg, ctxt)
        configs = msg.content.config_records[RECORD_KEY_CONFIGS]
        stage = configs.get(Key.STAGE)
        node_id = int(msg.metadata.dst_node_id)
        inner, sent = call_next, None
        if stage == Stage.SETUP:
            ctxt.state.config_records.pop(GUARD_STATE, None)  # a new session
            _check_setup(ctxt, configs)
        elif stage == Stage.SHARE_KEYS:
            keys = [k for k in configs if k != Key.STAGE]
            floor = _peer_floor(ctxt, _threshold(ctxt))
            _enough("the session shares keys with", len(keys) - 1, floor)
        elif stage == Stage.COLLECT_MASKED_VECTORS:
            inner, sent = _collect(msg, ctxt, call_next, node_id, configs)
        elif stage == Stage.UNMASK:
            active = _check_unmask(ctxt, configs, node_id)
            _record_unmasking(ctxt, ledger_dir, active)
        reply = secaggplus_mod(msg, ctxt, inner)
        if reply.has_content():
            out = reply.content.config_records.get(RECORD_KEY_CONFIGS)
            if out is not None and Key.MASKED_PARAMETERS in out:
                narrow_reply(reply, mod_range(ctxt))
        if sent is not None:  # the masked update left: the unmask stage must know which
            ctxt.state.config_records[GUARD_STATE] = ConfigRecord({"key": sent})
        return reply

    return secagg_when_requested


def _collect(
    msg: Message, ctxt: Context, call_next: ClientAppCallable, node_id: int, configs: ConfigRecord
) -> tuple[ClientAppCallable, str]:
    """The collect stage: check the peers, then train inside a :class:`SecureSession`."""
    sources = _ints(configs.get(Key.SOURCE_LIST) or [])
    floor = _peer_floor(ctxt, _threshold(ctxt))
    _enough("the session's masked sum holds", len(set(sources) - {node_id}), floor)
    session = SecureSession(node_id, frozenset({node_id, *sources}))
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    asked = question(fitins.config, parameters_to_ndarrays(fitins.parameters), run_id=ctxt.run_id)

    def inner(m: Message, c: Context) -> Message:
        with secure_session(session):
            return call_next(m, c)

    return inner, asked.key


def _record_unmasking(ctxt: Context, ledger_dir: Path | None, active: frozenset[int]) -> None:
    """Persist which nodes this session's sum covers, before any share leaves."""
    from client.ledger_store import client_store

    record = ctxt.state.config_records.get(GUARD_STATE)
    key = None if record is None else record.get("key")
    if not key:
        raise SecAggRefused("secure aggregation: unmask request for no update this node sent")
    store = client_store(ctxt, ledger_dir)
    cache = store.replies
    if cache is None:  # no reply outlives this process: nothing can be replayed
        return
    with store.locked():
        cache.record_unmasking(str(key), active)
