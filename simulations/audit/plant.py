"""Plant canaries in one client's data by writing the federation's data file.

The seam is the data itself, not the training code: the run's rows are written to a
JSONL file with an ownership column holding each row's client (from the run's own
partitioner, so the federation is the one the config describes), the canaries are
added to the chosen client only, and the audited runs use ``partition.method =
"natural"`` on that column. ``simulate()`` then runs unchanged, and
``config.resolved.toml`` of every audited run re-runs the same federation by itself.

Every canary a client holds must be trained on, so the audited runs keep no client-side
evaluation split (``data.client-eval-fraction = 0``); the server's held-out set is
written beside the data when the base run uses the demo one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.atomic import write_text_atomic
from common.config import RunConfig, validate
from common.data.pipeline import (
    DEMO,
    partition_for,
    run_labels,
    server_eval_records,
    source_records,
    to_examples,
)
from common.errors import PrivatuneError
from simulations.audit.canaries import Canary

#: The ownership column the audited runs partition on (not a column users' data has).
CLIENT_COLUMN = "audit-client"
DATA_FILE = "train.jsonl"
SERVER_EVAL_FILE = "server_eval.jsonl"


@dataclass(frozen=True)
class PlantedData:
    """The written data and the config that trains on it."""

    config: RunConfig
    data_file: Path
    canary_client: int
    client_rows: dict[int, int]  # rows per client, canaries included


def client_name(index: int) -> str:
    """Zero-padded, so natural partitioning (sorted names) keeps the partition ids."""
    return f"{index:04d}"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def plant(
    base: RunConfig, members: tuple[Canary, ...], *, client: int, folder: Path, repeats: int = 1
) -> PlantedData:
    """Write the federation's rows plus ``repeats`` copies of each member for ``client``."""
    num_clients = base.federation.num_clients
    if not 0 <= client < num_clients:
        raise PrivatuneError(
            f"audit canary client {client} does not exist: federation.num-clients is "
            f"{num_clients} (clients are 0..{num_clients - 1})"
        )
    records = source_records(base)
    examples = to_examples(base, records)
    partitions = partition_for(base, records, examples)
    rows: list[dict] = []
    for index, part in enumerate(partitions):
        for i in part:
            row = {k: v for k, v in records[int(i)].data.items() if k != CLIENT_COLUMN}
            rows.append({**row, CLIENT_COLUMN: client_name(index)})
    task = base.model.task
    for _ in range(repeats):
        rows.extend({**c.row(task), CLIENT_COLUMN: client_name(client)} for c in members)
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / DATA_FILE
    _write_jsonl(data_file, rows)

    tree = base.to_toml_dict()
    tree["data"].update(
        {
            "source": str(data_file.resolve()),
            "format": "jsonl",
            "client-eval-fraction": 0.0,
        }
    )
    if task == "sequence-classification":
        tree["data"]["labels"] = run_labels(base)  # canary labels use the run's label ids
    if base.data.server_eval == DEMO and base.data.source == DEMO:
        eval_file = folder / SERVER_EVAL_FILE
        _write_jsonl(eval_file, [r.data for r in server_eval_records(base) or []])
        tree["data"]["server-eval"] = str(eval_file.resolve())
    tree["partition"] = {**tree.get("partition", {}), "method": "natural", "column": CLIENT_COLUMN}
    tree["federation"]["evaluate-clients"] = 0
    config = validate(tree, source="audit")
    sizes = {index: len(part) for index, part in enumerate(partitions)}
    sizes[client] += repeats * len(members)
    return PlantedData(config=config, data_file=data_file, canary_client=client, client_rows=sizes)
