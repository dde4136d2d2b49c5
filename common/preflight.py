"""Check every input a run reads before anything is written or any process starts.

A simulation starts Ray, a server and many clients; a bad row found by a client in
round 1 would surface as a failed round, after the output folder was created. Reading
the model folder and the data here, once, in the calling process, turns every such
problem into one clear error (file, line, key, how to fix) and leaves no output behind.
The same functions the clients use do the checking, so nothing is validated twice
differently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.config import RunConfig
from common.data.pipeline import DEMO, encode, partition_for, run_labels, to_examples
from common.data.readers import read_records
from common.errors import ConfigError, DataError
from common.models import load_tokenizer, max_positions, resolve_model_dir

log = logging.getLogger("privatune")


@dataclass(frozen=True)
class InputReport:
    """What the preflight found: rows read (demo data excluded) and rows too long."""

    rows: int
    too_long: int


def check_model(config: RunConfig) -> None:
    """The model folder exists, its config.json is sound, max-length fits its positions."""
    folder = resolve_model_dir(config.model.path)
    limit = max_positions(config.model.path)
    if limit is not None and config.model.max_length > limit:
        raise ConfigError(
            [
                f"model.max-length: {config.model.max_length} exceeds the {limit} positions "
                f"the model in {folder} takes; set it to at most {limit}"
            ]
        )


def check_instruction_sets(config: RunConfig) -> None:
    """Mixture components and the general eval file: an error names the key
    (``data.mixture[1].source``, ``data.general-eval``)."""
    if config.data.mixture:
        from common.data.mixture import mixture_records

        mixture_records(config)
    spec = config.data.general_eval
    if spec and spec != DEMO:
        from common.data.formats import to_instruction

        try:
            to_instruction(read_records(spec, "auto"))
        except DataError as exc:
            raise DataError(f"data.general-eval: {exc}") from None


def check_inputs(config: RunConfig) -> InputReport:
    """Instruction sets, model, tokenizer, data.source and data.server-eval, read as the
    clients will."""
    check_instruction_sets(config)
    check_model(config)
    if config.model.task == "sequence-classification" and len(run_labels(config)) < 2:
        raise DataError(
            "holds a single class label; a classifier needs at least two (check "
            "data.label-field, or list every class in data.labels)",
            path=config.data.source,
        )
    sources = [s for s in (config.data.source, config.data.server_eval) if s and s != DEMO]
    if not sources:
        return InputReport(rows=0, too_long=0)
    tokenizer = load_tokenizer(config.model.path)
    rows = too_long = 0
    for source in dict.fromkeys(sources):
        fmt = config.data.format if source == config.data.source else "auto"
        records = read_records(source, fmt)
        examples = to_examples(config, records, tokenizer)
        if source == config.data.source:
            partition_for(config, records, examples)
        encoded = encode(
            config, examples, tokenizer, source=source, locations=[r.where for r in records]
        )
        rows += len(records)
        too_long += encoded.num_too_long
    if too_long:
        action = {"truncate": "truncated", "drop": "dropped"}[config.data.too_long]
        log.warning(
            "%d of %d rows are longer than model.max-length = %d tokens and will be %s "
            '(data.too-long = "%s")',
            too_long,
            rows,
            config.model.max_length,
            action,
            config.data.too_long,
        )
    return InputReport(rows=rows, too_long=too_long)
