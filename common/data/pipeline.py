"""From the run config to tensors: one client's train/eval split, or the server's eval set.

In simulation one source is partitioned among virtual clients; on a real node the
node's own file is the whole source (``partition_id=None``). Everything is
deterministic in ``training.seed`` so the server and every client agree on labels and
splits without exchanging data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import RunConfig
from common.data.demo import DEMO_LABELS, make_demo_classification, make_demo_instruction
from common.data.encode import Encoded, encode_classification, encode_instructions
from common.data.formats import (
    ClassificationExample,
    InstructionExample,
    label_vocabulary,
    to_classification,
    to_instruction,
)
from common.data.partition import partition_indices
from common.data.readers import Record, read_records
from common.errors import DataError

DEMO = "demo"
SERVER_EVAL_SEED_OFFSET = 10_007  # the server's demo eval sample never reuses client seeds


@dataclass(frozen=True)
class ClientData:
    """What one client trains and evaluates on."""

    train: Encoded
    eval: Encoded | None
    client_id: str

    def renamed(self, client_id: str) -> ClientData:
        return ClientData(self.train, self.eval, client_id)


def _demo_records(config: RunConfig, *, seed: int, num_examples: int) -> list[Record]:
    if config.model.task == "causal-lm":
        rows = make_demo_instruction(num_examples, seed=seed)
    else:
        rows = make_demo_classification(
            num_examples, seed=seed, num_orgs=config.federation.num_clients
        )
    return [Record(data=row, source="demo", line=i + 1) for i, row in enumerate(rows)]


def source_records(config: RunConfig, source: str | None = None) -> list[Record]:
    """All rows of ``data.source`` (or ``source``), validated later by the task format."""
    if source is None and config.data.mixture:
        from common.data.mixture import mixture_records

        return mixture_records(config)
    source = config.data.source if source is None else source
    if source == DEMO:
        return _demo_records(
            config, seed=config.training.seed, num_examples=config.data.demo_examples
        )
    return read_records(source, config.data.format)


def to_examples(
    config: RunConfig, records: list[Record], tokenizer: Any = None
) -> list[ClassificationExample] | list[InstructionExample]:
    if config.model.task == "sequence-classification":
        return to_classification(
            records, text_field=config.data.text_field, label_field=config.data.label_field
        )
    template = None
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):

        def template(messages: list[dict]) -> str:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )

    return to_instruction(records, chat_template=template)


_PARSED: dict[str, tuple[list[Record], list]] = {}


def _source_key(config: RunConfig, source: str) -> str | None:
    """What the parsed rows of ``source`` depend on (None: do not cache)."""
    if config.model.task != "sequence-classification":
        return None  # instruction rows may be rendered with the tokenizer's chat template
    stamp: tuple[int, int] | None = None
    if source != DEMO:
        path = Path(source)
        if not path.exists():
            return None
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
    return repr(
        (
            source,
            stamp,
            config.data.model_dump_json(),
            config.training.seed,
            config.federation.num_clients,
        )
    )


def parsed_source(
    config: RunConfig, source: str | None = None, tokenizer: Any = None
) -> tuple[list[Record], list]:
    """The source's records and validated examples, parsed once per process.

    In simulation every virtual client reads the same source to find its partition; with
    a thousand clients, parsing it again for each one made round time grow with the
    number of registered clients. The cache is keyed by the file's mtime and size.
    Callers must not modify the lists.
    """
    key = _source_key(config, config.data.source if source is None else source)
    if key is not None and key in _PARSED:
        return _PARSED[key]
    records = source_records(config, source)  # None: data.source, or the mixture
    parsed = (records, to_examples(config, records, tokenizer))
    if key is not None:
        _PARSED.clear()  # one source at a time: memory stays bounded
        _PARSED[key] = parsed
    return parsed


def run_labels(config: RunConfig) -> list[str]:
    """The label set every party maps to the same ids (classification only)."""
    if config.data.labels:
        return list(config.data.labels)
    if config.data.source == DEMO:
        return list(DEMO_LABELS)
    return label_vocabulary(parsed_source(config)[1])


def encode(
    config: RunConfig,
    examples: list,
    tokenizer: Any,
    *,
    source: str,
    locations: list[str] | None = None,
) -> Encoded:
    """``locations`` (``file:line`` per example) lets a rejected row be named exactly."""
    if config.model.task == "sequence-classification":
        labels = run_labels(config)
        return encode_classification(
            examples,
            tokenizer,
            {label: i for i, label in enumerate(labels)},
            max_length=config.model.max_length,
            too_long=config.data.too_long,
            source=source,
            locations=locations,
        )
    return encode_instructions(
        examples,
        tokenizer,
        max_length=config.model.max_length,
        too_long=config.data.too_long,
        source=source,
        locations=locations,
    )


def _split_eval(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_eval = int(round(n * fraction))
    if n - n_eval < 1:
        n_eval = n - 1
    return order[n_eval:], order[:n_eval]


def partition_for(config: RunConfig, records: list[Record], examples: list) -> list[list[int]]:
    """Indices of every virtual client's rows (simulation)."""
    part = config.partition
    labels = [e.label for e in examples] if config.model.task == "sequence-classification" else None
    groups = None
    if part.method == "natural":
        missing = [r for r in records if part.column not in r.data]
        if missing:
            raise DataError(
                f"partition.method = natural needs the column {part.column!r} in every row",
                path=missing[0].source,
                line=missing[0].line,
            )
        groups = [str(r.data[part.column]) for r in records]
    return partition_indices(
        part.method,
        num_partitions=config.federation.num_clients,
        seed=config.training.seed,
        labels=labels,
        groups=groups,
        alpha=part.alpha,
        shards_per_partition=part.shards_per_client,
        num_examples=len(records),
    )


def client_data(
    config: RunConfig,
    tokenizer: Any,
    *,
    partition_id: int | None,
    source: str | None = None,
    split: tuple[int, float] | None = None,
) -> ClientData:
    """One client's rows: its partition in simulation, or its own file on a node.

    The held-out split is drawn from ``training.seed`` and ``data.client-eval-fraction``,
    unless ``split`` = (seed, fraction) is given: a node's own, which the coordinator
    cannot move (client/policy.py).
    """
    records, examples = parsed_source(config, source, tokenizer)
    locations = [r.where for r in records]
    if partition_id is not None:
        indices = partition_for(config, records, examples)[partition_id]
        examples = [examples[i] for i in indices]
        locations = [locations[i] for i in indices]
        client_id = str(partition_id)
    else:
        client_id = "local"
    seed = config.training.seed + (partition_id or 0)
    fraction = config.data.client_eval_fraction
    if split is not None:
        seed, fraction = split
    train_idx, eval_idx = _split_eval(len(examples), fraction, seed)
    where = source or config.data.source

    def part(idx: list[int]) -> Encoded:
        return encode(
            config,
            [examples[i] for i in idx],
            tokenizer,
            source=where,
            locations=[locations[i] for i in idx],
        )

    train = part(train_idx)
    held_out = part(eval_idx) if eval_idx else None
    return ClientData(train=train, eval=held_out, client_id=client_id)


def server_eval_records(config: RunConfig) -> list[Record] | None:
    """The rows of the server's held-out set (None when there is none)."""
    spec = config.data.server_eval
    if not spec:
        return None
    if spec == DEMO:
        if config.data.source != DEMO:
            return None
        return _demo_records(
            config,
            seed=config.training.seed + SERVER_EVAL_SEED_OFFSET,
            num_examples=config.data.server_eval_examples,
        )
    return read_records(spec, "auto")


def server_eval_data(config: RunConfig, tokenizer: Any) -> Encoded | None:
    """The server's held-out set (None when data.server-eval is empty)."""
    records = server_eval_records(config)
    if records is None:
        return None
    spec = config.data.server_eval
    examples = to_examples(config, records, tokenizer)
    return encode(config, examples, tokenizer, source=spec, locations=[r.where for r in records])


GENERAL_EVAL_SEED_OFFSET = 30_011  # the general eval draw differs from any training draw


def general_eval_data(config: RunConfig, tokenizer: Any) -> Encoded | None:
    """The forgetting check's general held-out set (None when data.general-eval is unset)."""
    spec = config.data.general_eval
    if not spec:
        return None
    if spec == DEMO:
        from common.data.general import make_general_instruction

        rows = make_general_instruction(
            config.data.general_eval_examples,
            seed=config.training.seed + GENERAL_EVAL_SEED_OFFSET,
        )
        records = [Record(data=r, source="demo-general", line=i + 1) for i, r in enumerate(rows)]
    else:
        try:
            records = read_records(spec, "auto")
        except DataError as exc:
            raise DataError(f"data.general-eval: {exc}") from None
    examples = to_examples(config, records, tokenizer)
    return encode(config, examples, tokenizer, source=spec)


def largest_train_split(config: RunConfig) -> int | None:
    """The most training rows any simulated client holds (None if the data is not here).

    SecAgg+ needs an upper bound on the weights clients report; in simulation the server
    can compute it from the same deterministic partition the clients use.
    """
    if (
        not config.data.mixture
        and config.data.source != DEMO
        and not Path(config.data.source).exists()
    ):
        return None
    records = source_records(config)
    examples = to_examples(config, records)
    sizes = [len(p) for p in partition_for(config, records, examples)]
    return max(len(_split_eval(n, config.data.client_eval_fraction, 0)[0]) for n in sizes)
