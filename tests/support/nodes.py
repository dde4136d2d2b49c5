"""A real organisation's node folder (data, policy, state) and the Context its ClientApp
sees, for tests that drive the real client code as a deployed node runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w
from flwr.app import Context, RecordDict

from client.node_config import NODE_CONFIG_FILE_KEY
from common.config import RunConfig, load_config


def node_rows(n: int = 24) -> list[dict[str, str]]:
    return [{"text": f"word{i % 7} word{i % 3}", "label": "ab"[i % 2]} for i in range(n)]


def make_node(
    root: Path,
    *,
    rows: list[dict[str, str]] | None = None,
    node_id: int = 1,
    run_id: int = 7,
    **policy: Any,
) -> Context:
    """``root`` becomes the node's folder; ``policy`` adds node.toml keys (snake_case ok)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in (rows or node_rows()))
    (root / "data.jsonl").write_text(lines)
    settings = {"name": "org", "data-path": str(root / "data.jsonl"), "state-dir": str(root)}
    settings.update({k.replace("_", "-"): v for k, v in policy.items()})
    (root / "node.toml").write_text(tomli_w.dumps(settings))
    node_config = {NODE_CONFIG_FILE_KEY: str(root / "node.toml")}
    return Context(
        run_id=run_id, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={}
    )


def node_run_config(tiny_bert: Path, *extra: str) -> RunConfig:
    """A DP run a node accepts: tiny BERT, the labels of :func:`node_rows`, σ = 1."""
    return load_config(
        None,
        [
            f"model.path='{tiny_bert}'",
            "model.max-length=16",
            "data.labels=['a','b']",
            "data.server-eval=''",
            "training.local-steps=3",
            "training.batch-size=4",
            "training.optimizer='sgd'",
            "training.lr=0.5",
            "privacy.noise-multiplier=1.0",
            "privacy.budget-epsilon=50",
            *extra,
        ],
    )
