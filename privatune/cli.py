"""The `privatune` command: one entry point, one sub-command per role."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from common.errors import PrivatuneError
from common.outcome import BAD_INPUT_EXIT, outcome_of, summary_text
from common.progress_log import route_progress


def _setup_logging(verbose: bool) -> None:
    """Our progress lines on stderr; Flower's own INFO chatter only with --verbose."""
    route_progress(sys.stderr, verbose=verbose, level=logging.DEBUG if verbose else logging.INFO)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from common.config import load_config
    from simulations.run import simulate

    if (args.resume is None) == (args.output is None):
        raise PrivatuneError("simulate: give --output DIR for a new run, or --resume DIR")
    given = args.config is not None or bool(args.set)
    # On resume without --config/--set, the run's own saved config is used.
    config = load_config(args.config, args.set) if given or args.resume is None else None
    output = args.resume or args.output
    summary = simulate(
        config,
        output,
        overwrite=args.overwrite,
        resume=args.resume is not None,
        report=not args.no_report,
        verbose=args.verbose,
    )
    print(summary_text(summary, output))
    return outcome_of(summary).exit_code


def _cmd_report(args: argparse.Namespace) -> int:
    from server.report import write_report

    print(write_report(args.output))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.export import export

    out = export(Path(args.run), Path(args.out), merge=args.merge, overwrite=args.overwrite)
    kind = "merged model (plain transformers)" if args.merge else "PEFT adapter"
    print(f"{kind}: {out}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.config import load_config
    from simulations.audit.run import run_audit
    from simulations.audit.spec import DEFAULT_CONFIG, AuditSpec

    config = load_config(args.config or DEFAULT_CONFIG, args.set)
    spec = AuditSpec(
        members=args.canaries,
        non_members=args.non_members,
        client=args.client,
        repeats=args.repeats,
        seed=args.canary_seed,
        epsilons=tuple(args.epsilon) if args.epsilon else AuditSpec.epsilons,
        min_auc=args.min_auc,
        num_candidates=args.candidates,
    )
    result = run_audit(
        config, Path(args.output), spec, overwrite=args.overwrite, verbose=args.verbose
    )
    print(f"audit report: {result['report']}")
    for run in result["runs"]:
        eps = "no DP" if run["epsilon"] is None else f"ε = {run['epsilon']:.2f}"
        print(
            f"  {run['name']:<12} {eps:<12} AUC {run['auc']:.3f}  "
            f"exposure {run['member_exposure']:.2f} (never trained: "
            f"{run['non_member_exposure']:.2f})  {run['seconds']:.0f} s"
        )
    print(result["verdict"]["text"])
    return 0 if result["verdict"]["conclusive"] else 1


def _add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from simulations.audit.spec import AuditSpec

    aud = sub.add_parser(
        "audit",
        help="empirical privacy audit: plant canaries, run with and without DP, attack",
        description="Plant random secrets (canaries) in one client's data, run the same "
        "federation without DP and with DP-SGD at each --epsilon, and measure what an "
        "attacker holding the final global adapter learns: a loss-threshold membership "
        "AUC and canary exposure. Writes audit.json and audit.html. Exits 1 when the "
        "audit is inconclusive (the attack fails even without DP).",
    )
    aud.add_argument(
        "--config",
        help="the federation to audit (default: examples/audit.toml, MiniLM tuned so the "
        "attack succeeds without DP in a few minutes)",
    )
    aud.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable); [privacy] is set by the audit",
    )
    aud.add_argument("--output", required=True, help="audit folder (data, runs, report)")
    aud.add_argument("--overwrite", action="store_true", help="replace an existing audit")
    aud.add_argument(
        "--canaries", type=int, default=AuditSpec.members, help="canaries planted (members)"
    )
    aud.add_argument(
        "--non-members",
        type=int,
        default=AuditSpec.non_members,
        help="canaries drawn the same way but never trained on",
    )
    aud.add_argument(
        "--client", type=int, default=AuditSpec.client, help="the client holding the canaries"
    )
    aud.add_argument(
        "--repeats",
        type=int,
        default=AuditSpec.repeats,
        help="copies of each canary (k > 1 weakens DP to group privacy kε)",
    )
    aud.add_argument("--canary-seed", type=int, default=AuditSpec.seed, help="canary RNG seed")
    aud.add_argument(
        "--epsilon",
        type=float,
        action="append",
        metavar="EPS",
        help="target ε of a DP run (repeatable; default 8 and 1)",
    )
    aud.add_argument(
        "--min-auc",
        type=float,
        default=AuditSpec.min_auc,
        help="non-private AUC below which the audit is inconclusive",
    )
    aud.add_argument(
        "--candidates",
        type=int,
        default=AuditSpec.num_candidates,
        help="causal LM: candidate pins ranked per canary",
    )
    aud.set_defaults(func=_cmd_audit)


def _cmd_config(args: argparse.Namespace) -> int:
    from common.config import load_config

    print(load_config(args.config, args.set).to_toml(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privatune",
        description="Privacy-preserving federated fine-tuning of language models "
        "(LoRA adapters, DP-SGD, secure aggregation) on Flower.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="run config TOML (default: built-in defaults)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one config value (repeatable), e.g. --set training.local-steps=20",
        )

    sim = sub.add_parser("simulate", help="researcher: run virtual clients on this machine")
    add_config_args(sim)
    sim.add_argument("--output", help="output folder (metrics, adapter, report)")
    sim.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the killed run in DIR from its last completed round (with its saved "
        "config; --config/--set may change only resources, threads and timeouts)",
    )
    sim.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    sim.add_argument("--no-report", action="store_true", help="skip report.html")
    sim.set_defaults(func=_cmd_simulate)

    rep = sub.add_parser("report", help="rebuild report.html of a finished run")
    rep.add_argument("output", help="the run's output folder")
    rep.set_defaults(func=_cmd_report)

    exp = sub.add_parser("export", help="write a run's global adapter, or the merged model")
    exp.add_argument("run", help="the run's output folder")
    exp.add_argument("--out", required=True, help="folder to write")
    exp.add_argument("--merge", action="store_true", help="merge the adapter into the base")
    exp.add_argument("--overwrite", action="store_true")
    exp.set_defaults(func=_cmd_export)

    cfg = sub.add_parser("config", help="print the fully resolved config and exit")
    add_config_args(cfg)
    cfg.set_defaults(func=_cmd_config)

    _add_audit_parser(sub)

    from deploy.cli import add_parsers

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except PrivatuneError as exc:
        print(f"privatune: error: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT


if __name__ == "__main__":
    sys.exit(main())
