"""Greedy generation on held-out instruction rows: prompts, decoding and scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.adapters import build_adapter_model
from common.config import load_config
from common.data.encode import encode_instructions
from common.data.formats import InstructionExample
from common.evaluation import evaluate_run, generation_settings
from common.generation import (
    GenerationSettings,
    generation_scores,
    greedy_answers,
    prompts_and_references,
)
from common.models import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = [
    InstructionExample(
        "### Instruction:\nadd the two numbers\n\n### Response:\n", "4 plus 9 is 13"
    ),
    InstructionExample(
        "### Instruction:\nrepeat the words\n\n### Response:\n", "apple river stone"
    ),
    InstructionExample("### Instruction:\nwhat is the capital\n\n### Input:\nfrance", "paris"),
]


def _config(tiny_llama: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [f"model.path='{tiny_llama}'", "model.task='causal-lm'", "data.server-eval=''", *extra],
    )


def test_prompts_and_references_are_the_tokens_trained_on(tiny_llama: Path) -> None:
    """Prompt = tokens before the first label; reference = the labelled response minus EOS."""
    tok = load_tokenizer(str(tiny_llama))
    encoded = encode_instructions(EXAMPLES, tok, max_length=64, too_long="reject", source="t")
    prompts, refs = prompts_and_references(encoded.dataset, eos_token_id=tok.eos_token_id, limit=9)
    assert prompts == [tok(e.prompt)["input_ids"] for e in EXAMPLES]
    assert refs == [tok(e.response, add_special_tokens=False)["input_ids"] for e in EXAMPLES]
    assert (
        prompts_and_references(encoded.dataset, eos_token_id=tok.eos_token_id, limit=2)[0]
        == (prompts[:2])
    )
    # A response that fills the whole row leaves no prompt: that row is skipped.
    cut = encode_instructions(EXAMPLES[:2], tok, max_length=4, too_long="truncate", source="t")
    assert prompts_and_references(cut.dataset, eos_token_id=tok.eos_token_id, limit=9) == ([], [])


def _manual_greedy(model, prompt: list[int], eos: int, steps: int) -> list[int]:  # type: ignore[no-untyped-def]
    """The oracle: argmax of the last position, one full forward pass per token."""
    ids = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            token = int(logits.argmax())
            if token == eos:
                break
            out.append(token)
            ids.append(token)
    return out


def test_batched_greedy_equals_a_manual_greedy_loop(tiny_llama: Path) -> None:
    """Left-padded batches of different prompt lengths decode as each prompt alone does."""
    config = _config(tiny_llama)
    model = build_adapter_model(config)
    with torch.no_grad():  # a non-trivial adapter, so the answers differ between prompts
        generator = torch.Generator().manual_seed(3)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn(p.shape, generator=generator))
    tok = load_tokenizer(str(tiny_llama))
    encoded = encode_instructions(EXAMPLES, tok, max_length=64, too_long="reject", source="t")
    prompts, _ = prompts_and_references(encoded.dataset, eos_token_id=tok.eos_token_id, limit=9)
    assert len({len(p) for p in prompts}) > 1  # padding really happens
    answers = greedy_answers(
        model,
        prompts,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        max_new_tokens=6,
        batch_size=3,
    )
    assert model.training, "generation must restore train mode"
    model.eval()
    expected = [_manual_greedy(model, p, tok.eos_token_id, 6) for p in prompts]
    assert answers == expected
    assert len({tuple(a) for a in answers}) > 1


class _Oracle(torch.nn.Module):
    """A 'model' whose greedy answer to each known prompt is a fixed token list."""

    def __init__(self, answers: dict[tuple[int, ...], list[int]], pad: int) -> None:
        super().__init__()
        self.answers, self.pad = answers, pad

    def generate(self, *, input_ids, attention_mask, max_new_tokens, **_):  # type: ignore[no-untyped-def]
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = tuple(i for i, m in zip(ids, mask, strict=True) if m)
            new = (self.answers[prompt] + [self.pad] * max_new_tokens)[:max_new_tokens]
            rows.append(ids + new)
        return torch.tensor(rows)


def test_scores_of_known_answers(tiny_llama: Path) -> None:
    """Perfect answers score 1/100/1; a wrong one lowers each metric as computed by hand."""
    tok = load_tokenizer(str(tiny_llama))
    encoded = encode_instructions(EXAMPLES, tok, max_length=64, too_long="reject", source="t")
    prompts, refs = prompts_and_references(encoded.dataset, eos_token_id=tok.eos_token_id, limit=9)
    eos = tok.eos_token_id
    perfect = {tuple(p): r + [eos, 5] for p, r in zip(prompts, refs, strict=True)}
    settings = GenerationSettings(examples=9, max_new_tokens=12)
    scores = generation_scores(_Oracle(perfect, tok.pad_token_id), tok, encoded.dataset, settings)
    assert scores.examples == 3
    assert scores.metrics()["rouge_l"] == pytest.approx(1.0)
    assert scores.metrics()["exact_match"] == 1.0
    assert scores.metrics()["bleu"] == pytest.approx(100.0)

    wrong = dict(perfect)
    wrong[tuple(prompts[2])] = tok("rome", add_special_tokens=False)["input_ids"]
    scores = generation_scores(_Oracle(wrong, tok.pad_token_id), tok, encoded.dataset, settings)
    assert scores.metrics()["exact_match"] == pytest.approx(2 / 3)
    assert scores.metrics()["rouge_l"] == pytest.approx(2 / 3)
    # Bounded: only the first `examples` rows are answered.
    one = GenerationSettings(examples=1, max_new_tokens=12)
    assert (
        generation_scores(_Oracle(wrong, tok.pad_token_id), tok, encoded.dataset, one).examples == 1
    )


def test_generation_applies_to_causal_lms_only(tiny_llama: Path, tiny_bert: Path) -> None:
    """Classification and generation-examples = 0 have no generation metrics."""
    assert generation_settings(load_config(None, [f"model.path='{tiny_bert}'"])) is None
    assert generation_settings(_config(tiny_llama, "evaluation.generation-examples=0")) is None
    config = _config(tiny_llama, "evaluation.generation-examples=2", "evaluation.max-new-tokens=3")
    assert generation_settings(config) == GenerationSettings(2, 3, 8)
    model = build_adapter_model(config)
    tok = load_tokenizer(str(tiny_llama))
    encoded = encode_instructions(EXAMPLES, tok, max_length=64, too_long="reject", source="t")
    scores, generated = evaluate_run(model, tok, encoded.dataset, config)
    assert generated is not None and generated.examples == 2
    assert {"loss", "perplexity", "rouge_l", "bleu", "exact_match"} <= set(scores)
