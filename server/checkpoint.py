"""The server's checkpoint: everything needed to continue a run after its last round.

Written after every completed round (round 0 included) as one JSON file,
``checkpoint.json`` in the output folder, through a temporary file and ``os.replace``:
a kill leaves either the previous checkpoint or the new one, never a torn file. It is
written *after* the round's line of ``metrics.jsonl``, so on resume every metrics line
past the checkpoint's round belongs to a round that is redone, and is dropped.

Arrays (the global adapter) are base64 of their ``.npy`` bytes: dtype and shape kept,
bit for bit, so the resumed run sends clients exactly the adapter the killed run would
have sent (which is what lets a client recognise a replayed round, client/replay.py).
The server optimiser stores its own state the same way (server/strategy/server_opt.py).

What is *not* here, and why:

- the metrics so far: they are ``metrics.jsonl`` itself, up to ``round``;
- clients' privacy ledgers: clients own them (files on each node; in simulation under
  ``client_ledgers/``); the checkpoint holds only the server's view of them, which is
  what ``privacy_ledger.json`` shows;
- which nodes are which: Flower gives nodes new ids in every process.
"""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import PrivatuneError
from common.privacy.ledger import Entry
from server.outputs import write_json_atomic

CHECKPOINT_FILE = "checkpoint.json"
FORMAT = "privatune-checkpoint/2"  # central DP's releases as entries; no numpy state
FORMAT_1 = "privatune-checkpoint/1"  # still read, unless it holds central-DP rounds


def encode_array(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_array(text: str) -> np.ndarray:
    # allow_pickle=False: a checkpoint is data, never code.
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def rng_state() -> dict[str, Any]:
    """The generator the server draws from for things that are not privacy: ``random``
    (Flower samples clients and orders SecAgg+ neighbours with it). Central DP's noise
    and sampling come from a secret generator that is never saved (server/central_dp.py)."""
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss]}


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))


@dataclass
class Checkpoint:
    """The server's state after round ``round`` completed."""

    round: int
    run_key: str
    global_arrays: list[np.ndarray]
    server_optimizer: dict[str, Any]
    rng: dict[str, Any]
    ledgers: dict[str, Any] = field(default_factory=dict)  # LedgerBook.to_dict()
    # Central DP's releases so far, one (σ, q, 1) each: its ε composes over them.
    central_entries: list[Entry] = field(default_factory=list)
    stopped: bool = False  # the run ended early at this round (every client refused)
    finished: bool = False  # the final adapter and summary.json are written

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "round": self.round,
            "run_key": self.run_key,
            "global_arrays": [encode_array(a) for a in self.global_arrays],
            "server_optimizer": self.server_optimizer,
            "rng": self.rng,
            "ledgers": self.ledgers,
            "central_entries": [list(e) for e in self.central_entries],
            "stopped": self.stopped,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            round=int(data["round"]),
            run_key=str(data["run_key"]),
            global_arrays=[decode_array(t) for t in data["global_arrays"]],
            server_optimizer=dict(data["server_optimizer"]),
            rng=dict(data["rng"]),
            ledgers=dict(data.get("ledgers") or {}),
            central_entries=[
                (float(s), float(q), int(n)) for s, q, n in data.get("central_entries", [])
            ],
            stopped=bool(data.get("stopped", False)),
            finished=bool(data.get("finished", False)),
        )


def save_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    path = Path(folder) / CHECKPOINT_FILE
    write_json_atomic(path, checkpoint.to_dict())
    return path


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read ``folder``'s checkpoint, or say clearly why the run cannot be resumed."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise PrivatuneError(
            f"--resume {folder}: no {CHECKPOINT_FILE} there; the run was stopped before its "
            "untrained adapter was evaluated, or the folder is not a privatune run. Start it "
            "again (with --overwrite)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") not in (FORMAT_1, FORMAT):
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("format") == FORMAT_1 and int(data.get("noisy_rounds", 0)) > 0:
            raise PrivatuneError(
                f"{path}: a central-DP run checkpointed by an older privatune, whose "
                "accounting assumed a sampling that did not happen; it cannot be continued "
                "with a true ε: start it again"
            )
        return Checkpoint.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise PrivatuneError(f"{path}: unreadable checkpoint ({exc})") from exc
