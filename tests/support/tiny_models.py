"""Tiny random models (2 layers, width 32) with a word-level tokenizer, built locally.

Tests never download anything: the tokenizer's vocabulary is the words of the demo
data plus the words tests use, and the weights are random from a fixed seed.
"""

from __future__ import annotations

import re
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
EXTRA_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "and",
    "is",
    "in",
    "it",
    "for",
    "on",
    "with",
    "this",
    "that",
    "response",
    "instruction",
    "input",
]


def _vocabulary() -> list[str]:
    from common.data.demo import make_demo_classification, make_demo_instruction
    from common.data.general import make_general_instruction

    words: set[str] = set(EXTRA_WORDS)
    rows = make_demo_classification(400, seed=0) + make_demo_instruction(100, seed=0)
    rows += make_general_instruction(200, seed=0)  # the forgetting check's general set
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                words.update(re.findall(r"\w+|[^\w\s]", value.lower()))
    words.update("#:")
    return SPECIALS + sorted(words)


def _tokenizer(kind: str):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
    )


def build_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer, width-32 BERT encoder and its tokenizer, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _tokenizer("bert")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_llama(folder: Path, *, seed: int = 0, hidden: int = 32) -> Path:
    """A 2-layer, width-32 (or ``hidden``) Llama causal LM and its tokenizer, saved to ``folder``.

    4-bit quantization needs widths that are multiples of bitsandbytes' block size (64).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer("llama")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_gpt2(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer, width-32 GPT-2 (Conv1D layers, with biases) and its tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _tokenizer("llama")
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
