"""Canaries: random secrets planted in one client's data, and their never-trained twins.

A canary is a row no model could predict from the rest of the data: a random secret
string with a random label (classification: a deliberately arbitrary, i.e. wrong, label)
or a random secret answer to a question about a random identifier (causal LM: "the pin
of account qzvtk is 4831"). If the final global adapter assigns a planted canary a
lower loss than an identical-looking canary that was never trained on, the adapter has
memorised that client's example, which is exactly what example-level DP bounds.

Members and non-members are drawn from one generator with one seed, then split by a
seeded shuffle, so the two groups are exchangeable before training: any loss gap after
training is caused by training.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Digits of a causal-LM secret: 10**4 possible pins, the candidate space of exposure.
PIN_DIGITS = 4


@dataclass(frozen=True)
class Canary:
    """One secret. ``secret`` is what the attacker ranks among ``candidates``.

    Classification: ``text`` is the input, ``secret`` the planted label, and the
    candidates are all the run's labels. Causal LM: ``text`` is the prompt, ``secret``
    the pin in the response, and the candidates are other pins.
    """

    text: str
    secret: str
    candidates: tuple[str, ...]

    def row(self, task: str) -> dict[str, str]:
        """The data row that plants this canary (the same schema as the task's rows)."""
        return ROW_BUILDERS[task](self)


@dataclass(frozen=True)
class CanarySet:
    """Planted canaries (members) and same-distribution held-out ones (non-members)."""

    members: tuple[Canary, ...]
    non_members: tuple[Canary, ...]


def _random_word(rng: np.random.Generator, low: int = 4, high: int = 8) -> str:
    letters = rng.choice(list(string.ascii_lowercase), size=int(rng.integers(low, high)))
    return "".join(letters)


def _pin(rng: np.random.Generator) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=PIN_DIGITS))


def classification_canary(rng: np.random.Generator, labels: Sequence[str]) -> Canary:
    """A random secret string ("secret qzvtk mbrwa 4831 ...") with a random label."""
    words = " ".join(_random_word(rng) for _ in range(3))
    text = f"secret {words} {_pin(rng)}"
    label = str(labels[int(rng.integers(len(labels)))])
    return Canary(text=text, secret=label, candidates=tuple(str(x) for x in labels))


def pin_response(pin: str) -> str:
    return f"the pin is {pin}"


def causal_lm_canary(rng: np.random.Generator, num_candidates: int) -> Canary:
    """ "What is the pin of account qzvtk?" -> "the pin is 4831", and other pins to rank."""
    account = _random_word(rng, 5, 8)
    pin = _pin(rng)
    space = 10**PIN_DIGITS
    others: list[str] = []
    seen = {pin}
    while len(others) < min(num_candidates, space) - 1:
        other = f"{int(rng.integers(space)):0{PIN_DIGITS}d}"
        if other not in seen:
            seen.add(other)
            others.append(other)
    return Canary(
        text=f"What is the pin of account {account}?",
        secret=pin,
        candidates=(pin, *others),
    )


ROW_BUILDERS: dict[str, Callable[[Canary], dict[str, str]]] = {
    "sequence-classification": lambda c: {"text": c.text, "label": c.secret},
    "causal-lm": lambda c: {"instruction": c.text, "output": pin_response(c.secret)},
}


def make_canaries(
    task: str,
    *,
    num_members: int,
    num_non_members: int,
    seed: int,
    labels: Sequence[str] | None = None,
    num_candidates: int = 100,
) -> CanarySet:
    """Draw ``num_members + num_non_members`` distinct canaries, split by a seeded shuffle."""
    if task not in ROW_BUILDERS:
        raise ValueError(f"no canaries for task {task!r}; choose one of {sorted(ROW_BUILDERS)}")
    if task == "sequence-classification" and not labels:
        raise ValueError("classification canaries need the run's labels")
    rng = np.random.default_rng(seed)
    total = num_members + num_non_members
    canaries: list[Canary] = []
    texts: set[str] = set()
    while len(canaries) < total:
        if task == "sequence-classification":
            canary = classification_canary(rng, labels or ())
        else:
            canary = causal_lm_canary(rng, num_candidates)
        if canary.text not in texts:  # a duplicate would be a member and a non-member at once
            texts.add(canary.text)
            canaries.append(canary)
    order = rng.permutation(total)
    members = tuple(canaries[i] for i in order[:num_members])
    non_members = tuple(canaries[i] for i in order[num_members:])
    return CanarySet(members=members, non_members=non_members)
