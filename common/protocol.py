"""Names of the fit-config keys the server sends and clients read (the wire contract)."""

from __future__ import annotations

SERVER_ROUND = "server_round"
SECAGG_CLIPPING_RANGE = "secagg_clipping_range"
SECAGG_MAX_WEIGHT = "secagg_max_weight"
FROZEN_FINGERPRINT = "frozen_fingerprint"  # FFA-LoRA: hash of the shared frozen A matrices
