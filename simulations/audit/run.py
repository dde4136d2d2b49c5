"""`privatune audit`: the same federation without DP and at each ε, attacked afterwards.

Every run uses the same data file (canaries planted in one client), the same seeds and
the same config except ``[privacy]``; the ε reported for a run is the canary client's ε
read back from that run's ``privacy_ledger.json``, i.e. what actually ran.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.atomic import write_text_atomic
from common.config import RunConfig, validate
from simulations.audit.attack import load_final_model, score
from simulations.audit.canaries import make_canaries
from simulations.audit.metrics import auc, auc_standard_error, dp_auc_bound, group_privacy
from simulations.audit.plant import plant
from simulations.audit.spec import AuditSpec

log = logging.getLogger("privatune")

RESULTS_FILE = "audit.json"
NON_PRIVATE = "non-private"


@dataclass
class RunResult:
    name: str
    target_epsilon: float | None
    epsilon: float | None  # the canary client's ε from the run's ledger
    delta: float | None
    noise_multiplier: float | None
    auc: float
    auc_se: float
    auc_bound: float | None  # the largest AUC (ε, δ)-DP allows, group privacy included
    member_exposure: float
    non_member_exposure: float
    member_losses: list[float]
    non_member_losses: list[float]
    member_ranks: list[float]
    non_member_ranks: list[float]
    final_eval_accuracy: float | None
    seconds: float
    run_dir: str
    num_candidates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def run_config(planted: RunConfig, target_epsilon: float | None) -> RunConfig:
    """The planted config with only ``[privacy]`` changed."""
    tree = planted.to_toml_dict()
    privacy = {k: v for k, v in tree.get("privacy", {}).items() if k != "noise-multiplier"}
    privacy["enabled"] = target_epsilon is not None
    if target_epsilon is not None:
        privacy["target-epsilon"] = float(target_epsilon)
        privacy.pop("budget-epsilon", None)
    tree["privacy"] = privacy
    return validate(tree, source="audit")


def _ledger_entry(run_dir: Path, client: int) -> dict[str, Any] | None:
    path = run_dir / "privacy_ledger.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("clients", {}).get(str(client))


def _ledger_epsilon(entry: dict[str, Any] | None) -> tuple[float | None, float | None, list]:
    """(ε, δ, σs) recomputed from the (σ, q, steps) history the client recorded."""
    if not entry or not entry.get("history"):
        return None, None, []
    from common.privacy.ledger import compute_epsilon

    history = [(float(s), float(q), int(n)) for s, q, n in entry["history"]]
    delta = float(entry["delta"])
    return compute_epsilon(history, delta), delta, [s for s, _, _ in history]


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def verdict(results: list[RunResult], min_auc: float) -> dict[str, Any]:
    """Is the audit conclusive? Only if the attack clearly works without DP."""
    base = next((r for r in results if r.name == NON_PRIVATE), None)
    if base is None:
        return {"conclusive": False, "text": "inconclusive: no non-private run to compare with"}
    if base.auc < min_auc:
        return {
            "conclusive": False,
            "text": (
                f"inconclusive: the attack reached only AUC {base.auc:.2f} on the non-private "
                f"run (needs {min_auc:.2f}); low AUCs under DP would then say nothing about "
                "DP. Plant more repeats, train longer, or give the canary client less data."
            ),
        }
    parts = [f"the attack succeeds without DP (AUC {base.auc:.2f})"]
    violations = []
    for r in results:
        if r.name == NON_PRIVATE:
            continue
        eps = "?" if r.epsilon is None else f"{r.epsilon:.2f}"
        parts.append(f"ε = {eps}: AUC {r.auc:.2f} (gap {base.auc - r.auc:+.2f})")
        if r.auc_bound is not None and r.auc - 1.96 * r.auc_se > r.auc_bound:
            violations.append(r.name)
    if violations:
        parts.append(
            f"VIOLATION: {', '.join(violations)} exceed the AUC (ε, δ)-DP allows even after "
            "sampling error; the accounting or the DP implementation is wrong"
        )
    return {"conclusive": True, "violations": violations, "text": "; ".join(parts)}


def run_audit(
    base: RunConfig,
    output_dir: Path,
    spec: AuditSpec,
    *,
    overwrite: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Plant, run every variant, attack each final adapter; writes audit.json and the report."""
    from common.data.pipeline import run_labels
    from simulations.run import check_output_dir, require_completed, simulate

    started = time.monotonic()
    output_dir = Path(output_dir)
    if (output_dir / RESULTS_FILE).exists() and not overwrite:
        from common.errors import PrivatuneError

        raise PrivatuneError(
            f"--output {output_dir} already holds an audit ({RESULTS_FILE} exists); choose "
            "another folder or pass --overwrite"
        )
    check_output_dir(output_dir, overwrite=overwrite)
    labels = run_labels(base) if base.model.task == "sequence-classification" else None
    canaries = make_canaries(
        base.model.task,
        num_members=spec.members,
        num_non_members=spec.non_members,
        seed=spec.seed,
        labels=labels,
        num_candidates=spec.num_candidates,
    )
    planted = plant(
        base, canaries.members, client=spec.client, folder=output_dir / "data", repeats=spec.repeats
    )
    variants: list[tuple[str, float | None]] = [(NON_PRIVATE, None)]
    variants += [(f"dp-eps{e:g}", e) for e in spec.epsilons]
    results: list[RunResult] = []
    for name, target in variants:
        config = run_config(planted.config, target)
        run_dir = output_dir / "runs" / name
        log.info("audit run %s (%s)", name, "no DP" if target is None else f"target ε = {target}")
        t0 = time.monotonic()
        summary = require_completed(
            simulate(config, run_dir, overwrite=True, report=False, verbose=verbose),
            f"audit run {name}",
        )
        seconds = time.monotonic() - t0
        model, tokenizer = load_final_model(config, run_dir)
        members = score(model, tokenizer, config, canaries.members)
        others = score(model, tokenizer, config, canaries.non_members)
        del model
        # the loss-threshold attack: lower loss = "member"
        value = auc([-x for x in members.losses], [-x for x in others.losses])
        entry = _ledger_entry(run_dir, spec.client) if target is not None else None
        epsilon, delta, sigmas = _ledger_epsilon(entry)
        bound = None
        if epsilon is not None and delta is not None:
            bound = dp_auc_bound(*group_privacy(epsilon, delta, spec.repeats))
        results.append(
            RunResult(
                name=name,
                target_epsilon=target,
                epsilon=epsilon,
                delta=delta,
                noise_multiplier=sigmas[0] if sigmas else None,
                auc=value,
                auc_se=auc_standard_error(value, spec.members, spec.non_members),
                auc_bound=bound,
                member_exposure=_mean(members.exposures),
                non_member_exposure=_mean(others.exposures),
                member_losses=members.losses,
                non_member_losses=others.losses,
                member_ranks=members.ranks,
                non_member_ranks=others.ranks,
                final_eval_accuracy=summary.get("final_eval_accuracy"),
                seconds=round(seconds, 1),
                run_dir=str(run_dir.relative_to(output_dir)),
                num_candidates=members.num_candidates,
            )
        )
        log.info(
            "audit run %s: AUC %.3f, exposure %.2f (non-members %.2f), ε %s",
            name,
            value,
            results[-1].member_exposure,
            results[-1].non_member_exposure,
            "n/a" if epsilon is None else f"{epsilon:.2f}",
        )
    report = {
        "task": base.model.task,
        "model": base.model.path,
        "spec": asdict(spec),
        "canary_client": spec.client,
        "client_rows": {str(k): v for k, v in planted.client_rows.items()},
        "data_file": str(planted.data_file.relative_to(output_dir)),
        "verdict": verdict(results, spec.min_auc),
        "runs": [asdict(r) for r in results],
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text_atomic(output_dir / RESULTS_FILE, json.dumps(report, indent=2) + "\n")
    from simulations.audit.report import write_audit_report

    report["report"] = str(write_audit_report(output_dir))
    return report
