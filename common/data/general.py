"""An embedded set of *general* instructions, unrelated to the demo's support tickets.

The forgetting check (``data.general-eval = "demo"``) scores the model on this set before
fine-tuning and after the last round: whatever the base model could do here and the
fine-tuned one no longer can is what fine-tuning cost. The tasks need no outside
knowledge beyond a small fixed table and have one short answer each, so exact match is
meaningful: arithmetic, opposites, capitals, counting, copying and sorting words.

Deterministic for a seed (``random.Random`` only), as the rest of the demo data.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["GENERAL_DEMO", "make_general_instruction"]

GENERAL_DEMO = "demo-general"  # the data source name of this set in [[data.mixture]]

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_OPPOSITES = (
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("up", "down"),
    ("open", "closed"),
    ("early", "late"),
    ("happy", "sad"),
    ("light", "dark"),
    ("old", "new"),
    ("full", "empty"),
    ("left", "right"),
    ("high", "low"),
)
_CAPITALS = (
    ("france", "paris"),
    ("japan", "tokyo"),
    ("italy", "rome"),
    ("spain", "madrid"),
    ("germany", "berlin"),
    ("egypt", "cairo"),
    ("canada", "ottawa"),
    ("kenya", "nairobi"),
    ("peru", "lima"),
    ("norway", "oslo"),
)
_WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "garden",
    "window",
    "piano",
    "tiger",
    "candle",
    "forest",
    "lemon",
    "bridge",
    "rocket",
    "violin",
    "mountain",
    "pencil",
    "island",
    "orange",
]

Row = dict[str, str]


def _add(rng: random.Random) -> Row:
    a, b = rng.randint(0, 10), rng.randint(0, 10)
    return {
        "instruction": "Add the two numbers. Answer with the number only.",
        "input": f"{a} plus {b}",
        "output": str(a + b),
    }


def _opposite(rng: random.Random) -> Row:
    word, other = rng.choice(_OPPOSITES)
    if rng.random() < 0.5:
        word, other = other, word
    return {
        "instruction": "Give the opposite of the word. Answer with one word.",
        "input": word,
        "output": other,
    }


def _capital(rng: random.Random) -> Row:
    country, city = rng.choice(_CAPITALS)
    return {
        "instruction": "What is the capital city of the country? Answer with one word.",
        "input": country,
        "output": city,
    }


def _count(rng: random.Random) -> Row:
    n = rng.randint(1, 6)
    words = rng.sample(_WORDS, n)
    return {
        "instruction": "How many words are in the list? Answer with a word.",
        "input": " ".join(words),
        "output": _NUMBER_WORDS[n],
    }


def _copy(rng: random.Random) -> Row:
    words = " ".join(rng.sample(_WORDS, rng.randint(2, 5)))
    return {"instruction": "Repeat the words exactly.", "input": words, "output": words}


def _sort(rng: random.Random) -> Row:
    words = rng.sample(_WORDS, rng.randint(2, 4))
    return {
        "instruction": "Sort the words in alphabetical order.",
        "input": " ".join(words),
        "output": " ".join(sorted(words)),
    }


_TASKS: tuple[Callable[[random.Random], Row], ...] = (
    _add,
    _opposite,
    _capital,
    _count,
    _copy,
    _sort,
)


def make_general_instruction(num_examples: int = 64, *, seed: int = 0) -> list[Row]:
    """Alpaca rows (instruction/input/output), the six tasks in turn, slots drawn by seed."""
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    rng = random.Random(seed)
    return [_TASKS[i % len(_TASKS)](rng) for i in range(num_examples)]
