"""The server's copy of the adapter model: the initial adapter, central evaluation, saving.

The server holds the base model only to initialise the adapter, evaluate the global
adapter on a held-out set and write it in PEFT format; it never sends base weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Scalar

from common.adapters import (
    AdapterSpec,
    adapter_spec,
    build_adapter_model,
    get_adapter_arrays,
    save_adapter,
    set_adapter_arrays,
)
from common.config import RunConfig
from common.data.encode import Encoded
from common.data.pipeline import general_eval_data, run_labels, server_eval_data
from common.evaluation import evaluate_run
from common.models import load_tokenizer
from common.warnings_filter import silence_expected_warnings

silence_expected_warnings()


class ServerModel:
    """Base model + adapter on the server, built once per run."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.num_labels = (
            len(run_labels(config)) if config.model.task == "sequence-classification" else None
        )
        self.model: Any = build_adapter_model(config, num_labels=self.num_labels)
        self.tokenizer = load_tokenizer(config.model.path)
        self.spec: AdapterSpec = adapter_spec(self.model)
        self.initial: list[np.ndarray] = get_adapter_arrays(self.model)
        self.eval_data: Encoded | None = server_eval_data(config, self.tokenizer)
        self.general_data: Encoded | None = general_eval_data(config, self.tokenizer)

    @property
    def has_eval_set(self) -> bool:
        """Whether the server holds a held-out set of its own (data.server-eval)."""
        return self.eval_data is not None and len(self.eval_data) > 0

    def evaluate(
        self, _server_round: int, arrays: list[np.ndarray]
    ) -> tuple[float, dict[str, Scalar]] | None:
        if self.eval_data is None or len(self.eval_data) == 0:
            return None
        scores = self.scores(arrays, self.eval_data)
        loss = scores.pop("loss")
        scores.pop("num_examples", None)
        return loss, dict(scores)

    def scores(self, arrays: list[np.ndarray], data: Encoded) -> dict[str, float]:
        """Loss and task metrics of ``arrays`` on ``data`` (generation metrics included)."""
        set_adapter_arrays(self.model, arrays)
        scores, _ = evaluate_run(self.model, self.tokenizer, data.dataset, self.config)
        return scores

    def general_scores(self, arrays: list[np.ndarray]) -> dict[str, float] | None:
        """The forgetting check: the same metrics on data.general-eval (None if unset)."""
        if self.general_data is None or len(self.general_data) == 0:
            return None
        return self.scores(arrays, self.general_data)

    def save(self, arrays: list[np.ndarray], folder: Path) -> None:
        save_adapter(self.model, arrays, folder, method=self.config.peft.method)
