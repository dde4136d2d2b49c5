"""Tokenising rows into padded tensors, label masking, batch trimming, per-sequence LM loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from common.data.encode import (
    IGNORE_INDEX,
    encode_classification,
    encode_instructions,
    trim_batch,
)
from common.data.formats import ClassificationExample, InstructionExample
from common.errors import DataError
from common.losses import causal_lm_losses, classification_losses
from common.models import load_tokenizer

PROMPT = "Instruction: this is the input"
RESPONSE = "It is a Response"


@pytest.fixture(scope="module")
def llama_tokenizer(tiny_llama: Path) -> Any:
    return load_tokenizer(str(tiny_llama))


@pytest.fixture(scope="module")
def bert_tokenizer(tiny_bert: Path) -> Any:
    return load_tokenizer(str(tiny_bert))


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def test_instructions_label_only_the_response_and_eos(llama_tokenizer: Any) -> None:
    """Prompt and padding labels are -100; the labelled tokens decode to the response + EOS."""
    tok = llama_tokenizer
    prompt_ids = _ids(tok, PROMPT, special=True)
    response_ids = _ids(tok, RESPONSE, special=False)
    assert prompt_ids[0] == tok.bos_token_id and tok.unk_token_id not in prompt_ids + response_ids
    width = 16
    encoded = encode_instructions(
        [InstructionExample(PROMPT, RESPONSE), InstructionExample("this", "it")],
        tok,
        max_length=width,
        too_long="truncate",
        source="rows.jsonl",
    )
    assert len(encoded) == 2 and encoded.num_too_long == 0
    input_ids, attention, labels = encoded.dataset.tensors
    assert input_ids.shape == attention.shape == labels.shape == (2, width)

    used = len(prompt_ids) + len(response_ids) + 1
    row_ids, row_mask, row_labels = input_ids[0], attention[0], labels[0]
    assert row_ids[:used].tolist() == prompt_ids + response_ids + [tok.eos_token_id]
    assert row_ids[used:].eq(tok.pad_token_id).all()
    assert row_mask.tolist() == [1] * used + [0] * (width - used)
    # Prompt and padding ignored; response + EOS labelled in place (the loss shifts).
    assert row_labels[: len(prompt_ids)].eq(IGNORE_INDEX).all()
    assert row_labels[used:].eq(IGNORE_INDEX).all()
    kept = row_labels[row_labels != IGNORE_INDEX].tolist()
    assert kept == response_ids + [tok.eos_token_id]
    assert kept == row_ids[len(prompt_ids) : used].tolist()
    assert tok.decode(kept[:-1]) == RESPONSE.lower()
    assert kept[-1] == tok.eos_token_id

    short = labels[1][labels[1] != IGNORE_INDEX].tolist()
    assert tok.decode(short[:-1]) == "it" and short[-1] == tok.eos_token_id


def test_too_long_prompt_is_cut_from_the_left(llama_tokenizer: Any) -> None:
    """A row over max_length keeps its whole response + EOS and the prompt's last tokens."""
    tok = llama_tokenizer
    prompt = "the input of the instruction is a response to this " * 3 + "instruction:"
    prompt_ids = _ids(tok, prompt, special=True)
    response_ids = _ids(tok, RESPONSE, special=False)
    width = 10
    assert len(prompt_ids) + len(response_ids) + 1 > width
    encoded = encode_instructions(
        [InstructionExample(prompt, RESPONSE)],
        tok,
        max_length=width,
        too_long="truncate",
        source="rows.jsonl",
    )
    assert encoded.num_too_long == 1
    input_ids, attention, labels = encoded.dataset.tensors
    room = width - len(response_ids) - 1
    assert input_ids[0].tolist() == prompt_ids[-room:] + response_ids + [tok.eos_token_id]
    assert tok.decode(prompt_ids[-2:]) == "instruction :"
    assert attention[0].eq(1).all()
    kept = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert kept == response_ids + [tok.eos_token_id]
    assert labels[0][:room].eq(IGNORE_INDEX).all()

    dropped = encode_instructions(
        [InstructionExample(prompt, RESPONSE), InstructionExample("this", "it")],
        tok,
        max_length=width,
        too_long="drop",
        source="rows.jsonl",
    )
    assert len(dropped) == 1 and dropped.num_too_long == 1


def test_classification_maps_labels_through_the_given_ids(bert_tokenizer: Any) -> None:
    """Labels become the run's ids (not alphabetical positions); rows are [CLS] … [SEP] + pad."""
    tok = bert_tokenizer
    label_ids = {"pos": 0, "neg": 2, "neu": 1}
    examples = [
        ClassificationExample("this is the input", "neg"),
        ClassificationExample("it is", "pos"),
        ClassificationExample("the response", "neu"),
    ]
    encoded = encode_classification(
        examples, tok, label_ids, max_length=8, too_long="truncate", source="rows.csv"
    )
    input_ids, attention, labels = encoded.dataset.tensors
    assert labels.tolist() == [2, 0, 1]
    assert labels.dtype == torch.long
    assert input_ids.shape == (3, 8)
    first = _ids(tok, "this is the input", special=True)
    assert input_ids[0].tolist() == first + [tok.pad_token_id] * (8 - len(first))
    assert attention.sum(dim=1).tolist() == [6, 4, 4]


def test_classification_rejects_unknown_labels(bert_tokenizer: Any) -> None:
    """A label outside the run's label set is a DataError naming the label and the file."""
    examples = [ClassificationExample("it is", "pos"), ClassificationExample("this", "spam")]
    with pytest.raises(DataError, match=r"rows\.csv: labels \['spam'\] are not in"):
        encode_classification(
            examples,
            bert_tokenizer,
            {"pos": 0, "neg": 1},
            max_length=8,
            too_long="truncate",
            source="rows.csv",
        )


def test_trim_batch_removes_all_padding_columns() -> None:
    """Columns no row attends to are cut; 1-D labels untouched, 2-D labels cut alike."""
    input_ids = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 6, 0, 0, 0, 0]])
    attention = (input_ids != 0).long()
    labels_2d = torch.where(attention.bool(), input_ids, torch.full_like(input_ids, -100))
    ids, mask, labels = trim_batch([input_ids, attention, labels_2d])
    assert ids.tolist() == [[5, 6, 7], [5, 6, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[5, 6, 7], [5, 6, -100]]

    class_labels = torch.tensor([1, 0])
    _, _, kept = trim_batch([input_ids, attention, class_labels])
    assert kept is class_labels

    empty = [torch.zeros((0, 6), dtype=torch.long)] * 2 + [torch.zeros(0, dtype=torch.long)]
    assert [t.shape for t in trim_batch(empty)] == [(0, 6), (0, 6), (0,)]


def test_causal_lm_loss_is_the_per_sequence_mean_of_token_ce() -> None:
    """Each sequence's loss is the mean CE over its own labelled tokens (shifted by one)."""
    generator = torch.Generator().manual_seed(0)
    vocab, width = 11, 7
    logits = torch.randn(3, width, vocab, generator=generator)
    labels = torch.randint(0, vocab, (3, width), generator=generator)
    labels[0, :3] = IGNORE_INDEX  # prompt
    labels[0, 6:] = IGNORE_INDEX  # padding
    labels[1, :1] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX  # nothing labelled: loss 0, not NaN

    expected = []
    for row in range(3):
        terms = [
            -torch.log_softmax(logits[row, t - 1].double(), dim=-1)[labels[row, t]]
            for t in range(1, width)
            if labels[row, t] != IGNORE_INDEX
        ]
        expected.append(float(sum(terms) / len(terms)) if terms else 0.0)
    got = causal_lm_losses(logits, labels)
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    # Three labelled tokens weigh as much as six: not the token-level batch mean.
    token_mean = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert float(got[:2].mean()) != pytest.approx(float(token_mean), abs=1e-3)


def test_classification_loss_is_per_example_ce() -> None:
    """One loss per example: -log softmax(logits)[label]."""
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    got = classification_losses(logits, labels)
    first = -(2.0 - torch.logsumexp(torch.tensor([2.0, 0.0, -1.0]), 0))
    assert got.tolist() == pytest.approx([float(first), float(torch.log(torch.tensor(3.0)))])
