"""The few figures at the top of the report that say whether the run worked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.report.inputs import RunData, is_number, ledger_clients

Series = tuple[list[int], list[float]]  # (rounds, values) of one metric


@dataclass(frozen=True)
class Headline:
    """The few figures that say whether the run worked, computed once for the page."""

    rounds_completed: int
    rounds_run: int
    failed_rounds: list[int]
    accuracy_key: str | None
    final_round: int | None
    final_accuracy: float | None
    baseline_accuracy: float | None
    epsilon_max: float | None
    delta: float | None
    dp_ran: bool
    secagg: bool | None
    strategy: str | None = None
    peft_method: str | None = None
    generation: GenerationHeadline | None = None
    privacy_caveats: tuple[str, ...] = ()  # what the ε above does not cover


@dataclass(frozen=True)
class GenerationHeadline:
    """Scores of generated answers (causal LMs): the final round against round 0."""

    side: str  # "eval" (server held-out) or "fed_eval" (clients' held-out)
    final_round: int
    final: dict[str, float]
    baseline: dict[str, float] | None


GENERATION_METRICS = ("rouge_l", "bleu", "exact_match")


def generation_headline(rounds: Sequence[Mapping[str, Any]]) -> GenerationHeadline | None:
    """The server's scores when the run has them, else the clients' (no round 0 there)."""
    for side in ("eval", "fed_eval"):
        key = f"{side}_rouge_l"
        scored = [r for r in rounds if r["round"] > 0 and is_number(r.get(key))]
        if not scored:
            continue
        last = scored[-1]
        zero = next((r for r in rounds if r["round"] == 0 and is_number(r.get(key))), None)

        def pick(record: Mapping[str, Any], side: str = side) -> dict[str, float]:
            values = {m: record.get(f"{side}_{m}") for m in GENERATION_METRICS}
            return {m: float(v) for m, v in values.items() if is_number(v)}

        return GenerationHeadline(side, last["round"], pick(last), pick(zero) if zero else None)
    return None


def metric_series(rounds: Sequence[Mapping[str, Any]], key: str) -> Series:
    """(rounds, values) for the rounds that have a numeric ``key``."""
    pairs = [(r["round"], float(r[key])) for r in rounds if is_number(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def accuracy_key(rounds: Sequence[Mapping[str, Any]]) -> str | None:
    """Server-side accuracy when the run has it; else the clients' federated accuracy."""
    for key in ("eval_accuracy", "fed_eval_accuracy"):
        if any(r["round"] > 0 and is_number(r.get(key)) for r in rounds):
            return key
    return None


def baseline_value(rounds: Sequence[Mapping[str, Any]], key: str | None) -> float | None:
    """Round 0 is the untrained adapter: the bar training has to clear."""
    if key is None:
        return None
    zero = next((r for r in rounds if r["round"] == 0), None)
    return float(zero[key]) if zero is not None and is_number(zero.get(key)) else None


def ledger_delta(ledger: Mapping[str, Any] | None) -> float | None:
    if ledger is None:
        return None
    delta = ledger.get("delta")
    if is_number(delta):
        return float(delta)
    deltas = [c.get("delta") for c in ledger_clients(ledger).values()]
    return max((float(d) for d in deltas if is_number(d)), default=None)


def _final_epsilon(
    rounds: Sequence[Mapping[str, Any]], ledger: Mapping[str, Any] | None
) -> float | None:
    """The latest ε max logged; the ledger's largest ε when the metrics lack it."""
    _, values = metric_series(rounds, "epsilon_max")
    if values:
        return values[-1]
    epsilons = [c.get("epsilon") for c in ledger_clients(ledger).values()]
    return max((float(e) for e in epsilons if is_number(e)), default=None)


def _config_flag(config: Mapping[str, Any] | None, section: str) -> bool | None:
    """``[section] enabled`` from the resolved config, in kebab- or snake-case."""
    if config is None:
        return None
    table = config.get(section) or config.get(section.replace("-", "_"))
    value = table.get("enabled") if isinstance(table, Mapping) else None
    return value if isinstance(value, bool) else None


def _secagg(data: RunData) -> bool | None:
    flags = [r["secagg"] for r in data.rounds if isinstance(r.get("secagg"), bool)]
    if flags:
        return flags[-1]
    return _config_flag(data.config, "secure-aggregation")


def _table(config: Mapping[str, Any] | None, section: str) -> Mapping[str, Any]:
    table = (config or {}).get(section) or (config or {}).get(section.replace("-", "_"))
    return table if isinstance(table, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def run_strategy(data: RunData) -> str | None:
    """federation.strategy (summary.json, else the config) and a non-default server optimiser."""
    summary = data.summary if isinstance(data.summary, Mapping) else {}
    name = _text(summary.get("strategy")) or _text(
        _table(data.config, "federation").get("strategy")
    )
    optimiser = _text(_table(data.config, "server-optimizer").get("name"))
    if name is None:
        return None
    if optimiser and optimiser != "fedavg":
        return f"{name}, server optimiser {optimiser}"
    return name


def run_peft_method(data: RunData) -> str | None:
    """summary.json's peft_method, else the config's; a LoRA run names its variant."""
    summary = data.summary if isinstance(data.summary, Mapping) else {}
    peft = _table(data.config, "peft")
    method = (
        _text(summary.get("peft_method"))
        or _text(peft.get("method"))
        or _text(_table(data.config, "model").get("peft-method"))
    )
    lora = _table(data.config, "lora")
    if method is None and lora:
        method = "lora"
    variant = _text(lora.get("variant"))
    if method == "lora" and variant and variant != "lora":
        return f"lora ({variant.upper()}-LoRA)" if variant == "ffa" else f"lora ({variant})"
    return method


def privacy_caveats(data: RunData) -> tuple[str, ...]:
    """What summary.json says the run released outside its ε (SECURITY.md)."""
    summary = data.summary if isinstance(data.summary, Mapping) else {}
    caveats = []
    if summary.get("reproducible_noise") is True:
        caveats.append(
            "NOT PRIVATE: the DP noise followed training.seed (privacy.reproducible-noise), "
            "so whoever knows the seed can remove it"
        )
    if summary.get("training_metrics_shared") is True:
        caveats.append(
            "clients sent training loss and row counts outside DP "
            "(privacy.share-training-metrics): ε does not cover them"
        )
    return tuple(caveats)


def failed_rounds(data: RunData) -> list[int]:
    return [r["round"] for r in data.rounds if r.get("failed") is True]


def compute_headline(data: RunData) -> Headline:
    """Prefer the metrics (what happened per round), fall back to ledger and config."""
    rounds = data.rounds
    trained = [r for r in rounds if r["round"] > 0]
    failed = failed_rounds(data)
    key = accuracy_key(rounds)
    final_round, final_acc = None, None
    if key is not None:
        xs, ys = metric_series(trained, key)
        final_round, final_acc = xs[-1], ys[-1]
    epsilon = _final_epsilon(rounds, data.ledger)
    return Headline(
        rounds_completed=len(trained) - len([r for r in failed if r > 0]),
        rounds_run=len(trained),
        failed_rounds=failed,
        accuracy_key=key,
        final_round=final_round,
        final_accuracy=final_acc,
        baseline_accuracy=baseline_value(rounds, key),
        epsilon_max=epsilon,
        delta=ledger_delta(data.ledger),
        dp_ran=data.ledger is not None or epsilon is not None,
        secagg=_secagg(data),
        strategy=run_strategy(data),
        peft_method=run_peft_method(data),
        generation=generation_headline(rounds),
        privacy_caveats=privacy_caveats(data),
    )
