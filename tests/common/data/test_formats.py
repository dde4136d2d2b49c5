"""Validation of classification and instruction rows, and the too-long policies."""

from __future__ import annotations

import pytest

from common.data.formats import (
    ROW_FORMATS,
    ClassificationExample,
    InstructionExample,
    check_lengths,
    label_vocabulary,
    to_classification,
    to_instruction,
)
from common.data.readers import Record
from common.errors import DataError


def _records(*rows: dict, source: str = "data.jsonl") -> list[Record]:
    return [Record(row, source, i + 1) for i, row in enumerate(rows)]


# -- classification --------------------------------------------------------------------


def test_classification_converts_int_labels_to_strings() -> None:
    examples = to_classification(
        _records(
            {"text": "a", "label": 3}, {"text": "b", "label": "3"}, {"text": "c", "label": "x "}
        )
    )
    assert examples == [
        ClassificationExample("a", "3"),
        ClassificationExample("b", "3"),
        ClassificationExample("c", "x"),
    ]


def test_classification_custom_fields() -> None:
    records = _records({"body": "hello", "cat": "greeting"})
    assert to_classification(records, text_field="body", label_field="cat") == [
        ClassificationExample("hello", "greeting")
    ]


def test_missing_field_names_field_file_and_line() -> None:
    records = _records({"text": "ok", "label": "a"}, {"txt": "typo", "label": "a"})
    with pytest.raises(DataError) as info:
        to_classification(records)
    message = str(info.value)
    assert message.startswith("data.jsonl:2: missing field 'text'")
    assert "fields found: label, txt" in message and "data.text-field" in message


def test_missing_label_points_at_label_setting() -> None:
    with pytest.raises(DataError, match=r"data\.jsonl:1: missing field 'label'.*data\.label-field"):
        to_classification(_records({"text": "no label"}))


@pytest.mark.parametrize(
    ("label", "type_name"),
    [(True, "bool"), (1.5, "float"), (None, "null"), (["a"], "list"), ({"a": 1}, "dict")],
)
def test_wrong_label_type_names_type_file_and_line(label: object, type_name: str) -> None:
    records = _records({"text": "fine", "label": "a"}, {"text": "x", "label": label})
    with pytest.raises(DataError) as info:
        to_classification(records)
    message = str(info.value)
    assert message.startswith("data.jsonl:2: field 'label' must be a string or an integer")
    assert f"found {type_name}" in message


@pytest.mark.parametrize("text", ["", "   ", None, 5])
def test_text_must_be_non_empty_string(text: object) -> None:
    with pytest.raises(DataError, match=r"data\.jsonl:1: field 'text'"):
        to_classification(_records({"text": text, "label": "a"}))


def test_empty_string_label_is_rejected() -> None:
    with pytest.raises(DataError, match="field 'label' is empty"):
        to_classification(_records({"text": "t", "label": "  "}))


def test_columnar_rows_are_named_by_row_index() -> None:
    record = Record({"text": "t"}, "data.parquet", 7, "row")
    with pytest.raises(DataError, match=r"^data\.parquet: row 7: missing field 'label'"):
        to_classification([record])


def test_label_vocabulary_sorts_numbers_numerically() -> None:
    examples = [ClassificationExample("t", label) for label in ["10", "2", "b", "a", "2", "-1"]]
    assert label_vocabulary(examples) == ["-1", "2", "10", "a", "b"]
    assert label_vocabulary(["shipping", "billing", "account"]) == [
        "account",
        "billing",
        "shipping",
    ]


def test_label_vocabulary_ignores_order_of_appearance() -> None:
    a = label_vocabulary(["x", "y", "3", "1"])
    b = label_vocabulary(["1", "y", "3", "x", "x"])
    assert a == b == ["1", "3", "x", "y"]


# -- instruction -----------------------------------------------------------------------


def test_registry_names() -> None:
    assert list(ROW_FORMATS) == ["alpaca", "chat"]


def test_alpaca_with_and_without_input() -> None:
    examples = to_instruction(
        _records(
            {"instruction": "Add.", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Say bye.", "output": "bye"},
        )
    )
    assert examples[0] == InstructionExample(
        "### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:\n", "5"
    )
    assert examples[1] == InstructionExample("### Instruction:\nSay hi.\n\n### Response:\n", "hi")
    assert examples[2].prompt == "### Instruction:\nSay bye.\n\n### Response:\n"


CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}


def test_chat_plain_fallback() -> None:
    (example,) = to_instruction(_records(CHAT))
    assert example.prompt == (
        "<|system|>\nBe brief.\n<|user|>\nCapital of France?\n<|assistant|>\n"
    )
    assert example.response == "Paris."


def test_chat_template_gets_messages_before_the_reply() -> None:
    seen: list[list[dict]] = []

    def template(messages: list[dict]) -> str:
        seen.append(messages)
        return "|".join(m["content"] for m in messages) + "|A:"

    (example,) = to_instruction(_records(CHAT), chat_template=template)
    assert example == InstructionExample("Be brief.|Capital of France?|A:", "Paris.")
    assert [m["role"] for m in seen[0]] == ["system", "user"]


def test_chat_template_failure_names_the_row() -> None:
    def template(messages: list[dict]) -> str:
        raise ValueError("roles must alternate")

    with pytest.raises(DataError, match=r"data\.jsonl:1: .*chat template.*roles must alternate"):
        to_instruction(_records(CHAT), chat_template=template)


def test_mixed_formats_are_detected_per_row() -> None:
    examples = to_instruction(_records({"instruction": "i", "output": "o"}, CHAT))
    assert [e.response for e in examples] == ["o", "Paris."]


def test_chat_last_message_must_be_assistant() -> None:
    row = {"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "?"}]}
    with pytest.raises(DataError, match=r"data\.jsonl:1: the last message has role 'user'"):
        to_instruction(_records(row))


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ("user: hi", "must be a list"),
        ([{"role": "assistant", "content": "x"}], "at least"),
        ([{"role": "user"}, {"role": "assistant", "content": "x"}], r"messages\[0\]"),
        ([{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}], "content"),
    ],
)
def test_bad_chat_rows(messages: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        to_instruction(_records({"messages": messages}))


def test_unrecognised_row_names_found_and_expected_fields() -> None:
    records = _records({"instruction": "i", "output": "o"}, {"question": "q", "answer": "a"})
    with pytest.raises(DataError) as info:
        to_instruction(records)
    message = str(info.value)
    assert message.startswith("data.jsonl:2:")
    assert "fields found: answer, question" in message
    assert "instruction, output" in message and "messages" in message


def test_forced_row_format() -> None:
    with pytest.raises(DataError, match="is not a alpaca row"):
        to_instruction(_records(CHAT), row_format="alpaca")
    with pytest.raises(DataError, match="unknown instruction row format"):
        to_instruction(_records(CHAT), row_format="sharegpt")


def test_alpaca_output_must_be_text() -> None:
    with pytest.raises(DataError, match=r"data\.jsonl:1: field 'output' must be a string"):
        to_instruction(_records({"instruction": "i", "output": 5}))


# -- lengths ---------------------------------------------------------------------------

LENGTHS = [3, 9, 5, 12, 4]


def test_truncate_keeps_all_and_counts() -> None:
    assert check_lengths(LENGTHS, max_length=8, policy="truncate", source="s") == (
        [0, 1, 2, 3, 4],
        2,
    )


def test_drop_drops_and_counts() -> None:
    assert check_lengths(LENGTHS, max_length=8, policy="drop", source="s") == ([0, 2, 4], 2)


def test_reject_names_first_row_and_max_length() -> None:
    with pytest.raises(DataError) as info:
        check_lengths(LENGTHS, max_length=8, policy="reject", source="train.jsonl")
    message = str(info.value)
    assert message.startswith("train.jsonl: row 1 ")
    assert "9 tokens" in message and "max-length = 8" in message and "2 row(s)" in message


def test_reject_can_name_the_file_line() -> None:
    with pytest.raises(DataError, match=r"^t\.jsonl:7: this row is 10 tokens"):
        check_lengths(
            [1, 10],
            max_length=5,
            policy="reject",
            source="t.jsonl",
            locations=["t.jsonl:3", "t.jsonl:7"],
        )


def test_all_policies_accept_short_rows() -> None:
    for policy in ("truncate", "drop", "reject"):
        assert check_lengths([1, 8], max_length=8, policy=policy, source="s") == ([0, 1], 0)


def test_unknown_policy() -> None:
    with pytest.raises(DataError, match="unknown too-long policy 'chop'.*truncate, drop, reject"):
        check_lengths([1], max_length=8, policy="chop", source="s")
