"""Turn raw records into validated, typed training examples.

Validation happens here, before any tokenizer or model is loaded, so a client with a
bad file fails fast with a message that names the file, the line and the fix, instead
of failing minutes later inside a training loop (or, worse, training on garbage).
Everything in this module is tokenizer-agnostic: callers tokenize and pass only
lengths to :func:`check_lengths`.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from common.data.readers import Record
from common.errors import DataError

__all__ = [
    "LENGTH_POLICIES",
    "ROW_FORMATS",
    "ChatTemplate",
    "ClassificationExample",
    "InstructionExample",
    "RowFormat",
    "check_lengths",
    "detect_row_format",
    "label_vocabulary",
    "render_alpaca_prompt",
    "render_plain_chat",
    "to_classification",
    "to_instruction",
]

#: Renders the messages before the reply into a prompt that ends where the assistant's
#: reply starts (for a tokenizer: ``apply_chat_template(..., add_generation_prompt=True)``).
ChatTemplate = Callable[[list[dict[str, str]]], str]


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationExample:
    """A text and its class name; labels are strings so every node maps them alike."""

    text: str
    label: str


def _field(record: Record, name: str, setting: str) -> Any:
    if name not in record.data:
        found = ", ".join(sorted(map(str, record.data))) or "none"
        raise record.error(
            f"missing field {name!r} (fields found: {found}); add it to every row or set "
            f"{setting} to the column that holds it"
        )
    return record.data[name]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _label(record: Record, value: Any, field: str) -> str:
    """Normalise a label to a string, accepting only str and int.

    Ints become their decimal string so that ``3`` in a JSONL file and ``"3"`` in a CSV
    file are the same class.  bool is rejected even though it is an int subclass, and
    floats are rejected because ``1.0`` vs ``1`` silently splitting a class is a worse
    failure than asking the user to fix the column.
    """
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise record.error(
            f"field {field!r} must be a string or an integer class label, found "
            f"{_type_name(value)} ({value!r}); convert the column to strings or integers"
        )
    label = str(int(value)) if isinstance(value, numbers.Integral) else value.strip()
    if not label:
        raise record.error(f"field {field!r} is empty; every row needs a class label")
    return label


def to_classification(
    records: Iterable[Record], *, text_field: str = "text", label_field: str = "label"
) -> list[ClassificationExample]:
    """Validate records as (text, label) pairs, failing on the first bad row."""
    examples: list[ClassificationExample] = []
    for record in records:
        text = _field(record, text_field, "data.text-field")
        if not isinstance(text, str):
            raise record.error(
                f"field {text_field!r} must be a string, found {_type_name(text)} ({text!r})"
            )
        if not text.strip():
            raise record.error(f"field {text_field!r} is empty; remove the row or fill it in")
        label = _label(record, _field(record, label_field, "data.label-field"), label_field)
        examples.append(ClassificationExample(text, label))
    return examples


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _label_order(label: str) -> tuple[int, float, str]:
    if _NUMBER.fullmatch(label):
        return (0, float(label), label)
    return (1, 0.0, label)


def label_vocabulary(examples: Iterable[ClassificationExample | str]) -> list[str]:
    """Sorted unique labels; position in the list is the label id.

    Every client and the server must map labels to the same ids without talking to each
    other, so the order depends only on the set of labels: numeric-looking labels come
    first in numeric order (so "2" < "10"), then the rest alphabetically.
    """
    labels = {e if isinstance(e, str) else e.label for e in examples}
    return sorted(labels, key=_label_order)


# --------------------------------------------------------------------------------------
# Instruction tuning
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstructionExample:
    """A prompt and the response the model should learn to produce after it."""

    prompt: str
    response: str


@dataclass(frozen=True)
class RowFormat:
    """One supported shape of instruction row: how to recognise it and convert it."""

    name: str
    description: str
    detect: Callable[[dict[str, Any]], bool]
    convert: Callable[[Record, ChatTemplate | None], InstructionExample]


def _text(record: Record, field: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise record.error(
            f"field {field!r} must be a string, found {_type_name(value)} ({value!r})"
        )
    if not allow_empty and not value.strip():
        raise record.error(f"field {field!r} is empty; remove the row or fill it in")
    return value


def render_alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The Alpaca prompt; the Input block is left out when there is no input."""
    if input_text.strip():
        return f"### Instruction:\n{instruction}\n\n### Input:\n{input_text}\n\n### Response:\n"
    return f"### Instruction:\n{instruction}\n\n### Response:\n"


def _convert_alpaca(record: Record, chat_template: ChatTemplate | None) -> InstructionExample:
    data = record.data
    instruction = _text(record, "instruction", data["instruction"])
    raw_input = data.get("input")
    input_text = "" if raw_input is None else _text(record, "input", raw_input, allow_empty=True)
    output = _text(record, "output", data["output"])
    return InstructionExample(render_alpaca_prompt(instruction, input_text), output)


def render_plain_chat(messages: Sequence[dict[str, str]]) -> str:
    """Fallback chat rendering for tokenizers without a chat template."""
    body = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return f"{body}<|assistant|>\n"


def _messages(record: Record) -> list[dict[str, str]]:
    messages = record.data["messages"]
    if not isinstance(messages, list):
        raise record.error(
            f"field 'messages' must be a list of {{role, content}} objects, found "
            f"{_type_name(messages)}; CSV cannot hold lists, so store chat data as JSONL "
            "or Parquet"
        )
    if len(messages) < 2:
        raise record.error(
            f"field 'messages' has {len(messages)} message(s); a chat row needs at least "
            "one prompt message followed by the assistant's reply"
        )
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
            raise record.error(
                f"messages[{index}] must be an object with 'role' and 'content', found {message!r}"
            )
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not role.strip():
            raise record.error(f"messages[{index}].role must be a non-empty string")
        if not isinstance(content, str):
            raise record.error(
                f"messages[{index}].content must be a string, found {_type_name(content)}"
            )
        checked.append({"role": role, "content": content})
    last = checked[-1]
    if last["role"] != "assistant":
        raise record.error(
            f"the last message has role {last['role']!r}, but it must be 'assistant': the "
            "model learns to produce the final assistant reply"
        )
    if not last["content"].strip():
        raise record.error("the last (assistant) message is empty; there is nothing to learn")
    return checked


def _convert_chat(record: Record, chat_template: ChatTemplate | None) -> InstructionExample:
    messages = _messages(record)
    before, reply = messages[:-1], messages[-1]["content"]
    if chat_template is None:
        return InstructionExample(render_plain_chat(before), reply)
    try:
        prompt = chat_template(before)
    except Exception as exc:  # template engines raise anything; name the row instead
        raise record.error(
            f"the tokenizer's chat template rejected these messages ({exc}); check the "
            "roles and their order"
        ) from exc
    if not isinstance(prompt, str):
        raise TypeError(f"chat_template must return str, got {type(prompt).__name__}")
    return InstructionExample(prompt, reply)


ROW_FORMATS: dict[str, RowFormat] = {
    "alpaca": RowFormat(
        "alpaca",
        "instruction, output and optional input",
        lambda data: "instruction" in data and "output" in data,
        _convert_alpaca,
    ),
    "chat": RowFormat(
        "chat",
        "messages: a list of {role, content} ending with role 'assistant'",
        lambda data: "messages" in data,
        _convert_chat,
    ),
}


def _expected() -> str:
    return "; ".join(f"{f.name} ({f.description})" for f in ROW_FORMATS.values())


def detect_row_format(record: Record) -> RowFormat:
    """The first registered row format whose fields are present in this record."""
    for row_format in ROW_FORMATS.values():
        if row_format.detect(record.data):
            return row_format
    found = ", ".join(sorted(map(str, record.data))) or "none"
    raise record.error(f"is not an instruction row: fields found: {found}; expected {_expected()}")


def to_instruction(
    records: Iterable[Record],
    *,
    chat_template: ChatTemplate | None = None,
    row_format: str = "auto",
) -> list[InstructionExample]:
    """Validate records as instruction examples, recognising each row's format.

    Detection is per row so a file may mix Alpaca and chat rows.  ``row_format`` forces
    one format (``"alpaca"`` or ``"chat"``), which turns a row of the other kind into an
    error instead of silently accepting it.
    """
    if row_format != "auto" and row_format not in ROW_FORMATS:
        valid = ", ".join(["auto", *ROW_FORMATS])
        raise DataError(f"unknown instruction row format {row_format!r}; valid: {valid}")
    forced = None if row_format == "auto" else ROW_FORMATS[row_format]
    examples: list[InstructionExample] = []
    for record in records:
        fmt = forced if forced is not None else detect_row_format(record)
        if not fmt.detect(record.data):
            found = ", ".join(sorted(map(str, record.data))) or "none"
            raise record.error(
                f"is not a {fmt.name} row: fields found: {found}; expected {fmt.description}"
            )
        examples.append(fmt.convert(record, chat_template))
    return examples


# --------------------------------------------------------------------------------------
# Length policy
# --------------------------------------------------------------------------------------

LengthPolicy = Callable[[Sequence[int], int, str, Sequence[str] | None], tuple[list[int], int]]


def _too_long(lengths: Sequence[int], max_length: int) -> list[int]:
    return [i for i, n in enumerate(lengths) if n > max_length]


def _truncate(
    lengths: Sequence[int], max_length: int, source: str, locations: Sequence[str] | None
) -> tuple[list[int], int]:
    return list(range(len(lengths))), len(_too_long(lengths, max_length))


def _drop(
    lengths: Sequence[int], max_length: int, source: str, locations: Sequence[str] | None
) -> tuple[list[int], int]:
    kept = [i for i, n in enumerate(lengths) if n <= max_length]
    return kept, len(lengths) - len(kept)


def _reject(
    lengths: Sequence[int], max_length: int, source: str, locations: Sequence[str] | None
) -> tuple[list[int], int]:
    long_rows = _too_long(lengths, max_length)
    if long_rows:
        first = long_rows[0]
        # With locations the row's own file:line leads, like every other row error.
        row = "this row" if locations is not None else f"row {first}"
        error = DataError(
            f"{row} is {lengths[first]} tokens, longer than model.max-length "
            f"= {max_length} ({len(long_rows)} row(s) too long in total); shorten those "
            'rows, raise model.max-length, or set data.too-long to "truncate" or "drop"',
            path=source if locations is None else None,
        )
        if locations is not None:
            error = DataError(f"{locations[first]}: {error}")
        raise error
    return list(range(len(lengths))), 0


LENGTH_POLICIES: dict[str, LengthPolicy] = {
    "truncate": _truncate,
    "drop": _drop,
    "reject": _reject,
}


def check_lengths(
    lengths: Sequence[int],
    *,
    max_length: int,
    policy: str,
    source: str,
    locations: Sequence[str] | None = None,
) -> tuple[list[int], int]:
    """Apply the too-long policy to token lengths.

    Returns the indices of the examples to keep and how many were too long (truncated
    under ``truncate``, dropped under ``drop``); ``reject`` raises on the first one.
    ``locations`` (e.g. ``[r.where for r in records]``) lets the error name the file line.
    """
    if policy not in LENGTH_POLICIES:
        raise DataError(f"unknown too-long policy {policy!r}; valid: {', '.join(LENGTH_POLICIES)}")
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if locations is not None and len(locations) != len(lengths):
        raise ValueError("locations must have one entry per length")
    return LENGTH_POLICIES[policy](lengths, max_length, source, locations)
