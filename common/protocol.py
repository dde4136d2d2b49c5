"""Names of the fit-config keys the server sends and clients read (the wire contract)."""

from __future__ import annotations

import re

SERVER_ROUND = "server_round"
SECAGG_CLIPPING_RANGE = "secagg_clipping_range"
SECAGG_MAX_WEIGHT = "secagg_max_weight"
FROZEN_FINGERPRINT = "frozen_fingerprint"  # FFA-LoRA: hash of the shared frozen A matrices
RUN_KEY = "run_key"  # the run's identity in client ledgers; stable across a server restart
# Every refusal a client sends because an ε budget (the run's or its lifetime one) would
# be exceeded contains this; the server tells a spent budget from a policy refusal by it.
BUDGET_REFUSAL = "privacy budget"


# A client that fails says who it is in its error reply (client/faults.py), so the server
# can name it in metrics.jsonl even before it ever answered.
_FAILED = re.compile(r"^client ([^\s:]+): ")
_REFUSED = re.compile(r"^client [^\s:]+: refused: (.*)$", re.DOTALL)


def failure_reason(client_id: str, exc: BaseException) -> str:
    """The error reply's reason; a refusal (common.errors.Refused) reads ``refused: ...``."""
    from common.errors import Refused

    kind = "refused" if isinstance(exc, Refused) else type(exc).__name__
    return f"client {client_id}: {kind}: {exc}"


def refusal(reason: str) -> str | None:
    """What a client refused, if an error reply's reason is a refusal."""
    match = _REFUSED.match(reason)
    return match.group(1) if match else None


def failed_client(reason: str) -> str | None:
    """The client id a :func:`failure_reason` names, if the reason is one."""
    match = _FAILED.match(reason)
    return match.group(1) if match else None
