"""Traffic: uplink bytes per client-round ÷ raw adapter bytes, and adapter ÷ full model.

Uplink is every byte of every reply a client sends in a round, counted on the server
(server/traffic.py: each message's serialised content), so with SecAgg+ its key
exchange, encrypted shares and masked vectors are all included; the masked vectors are
counted as they arrive, as uint32 (narrowed by the client from Flower's int64,
common/secagg_wire.py), before the server widens them for Flower's sum. Raw adapter
bytes are the trained parameters in float32; full-model bytes are every parameter of the
base model with its classification head, in float32 (what full fine-tuning would send).

    .venv/bin/python -m simulations.benchmarks.traffic [--quick] [--out FILE]
"""

from __future__ import annotations

from typing import Any

from common.config import load_config
from simulations.benchmarks.common import (
    ROOT,
    command,
    goal_text,
    median,
    parser,
    simulate_run,
    table,
    write,
)
from simulations.benchmarks.secagg_cost import config as federation_config
from simulations.benchmarks.secagg_cost import raw_adapter_bytes, uplink_per_client_round

GOALS = {"uplink_secagg": "<= 1.10", "adapter_lora": "<= 0.005", "adapter_ffa": "<= 0.0025"}


def adapter_share(model: str, variant: str) -> dict[str, Any]:
    """Adapter bytes ÷ full-model bytes for the demo's LoRA r = 8 on query/value."""
    from common.adapters import adapter_spec, build_adapter_model

    cfg = load_config(
        ROOT / "examples" / "demo.toml", [f"model.path='{model}'", f"lora.variant='{variant}'"]
    )
    peft_model = build_adapter_model(cfg, num_labels=5)
    adapter = adapter_spec(peft_model).nbytes
    full = 4 * sum(p.numel() for name, p in peft_model.named_parameters() if ".lora_" not in name)
    return {
        "variant": variant,
        "adapter_bytes": adapter,
        "full_model_bytes": full,
        "ratio": adapter / full,
    }


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "traffic").parse_args(argv)
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    # The same federation as secagg_cost's first case, so the suite runs it once.
    clients, rounds = (3, 2) if args.quick else (5, 4)
    raw = raw_adapter_bytes(model)
    uplink: list[dict[str, Any]] = []
    for secure in (False, True):
        run = simulate_run(federation_config(clients, rounds, secure=secure, model=model))
        uplink.append(
            {
                "secagg": secure,
                "uplink_per_client_round": uplink_per_client_round(run, clients),
                "downlink_per_client_round": median(
                    r["downlink_bytes"] / clients for r in run.timed
                ),
                "ratio": uplink_per_client_round(run, clients) / raw,
            }
        )
    shares = [adapter_share(model, v) for v in ("lora", "ffa")]
    report = {
        "benchmark": "traffic",
        "command": command("traffic", args.quick),
        "model": "tiny" if args.quick else "all-MiniLM-L6-v2",
        "clients": clients,
        "raw_adapter_bytes": raw,
        "uplink": uplink,
        "adapter_share": shares,
        "goals": GOALS,
    }
    rows = [
        (
            f"uplink/client-round ÷ raw adapter, SecAgg+ {'on' if u['secagg'] else 'off'}",
            u["uplink_per_client_round"],
            raw,
            u["ratio"],
            f"{GOALS['uplink_secagg']} ({goal_text(u['ratio'], GOALS['uplink_secagg'])})"
            if u["secagg"]
            else "",
        )
        for u in uplink
    ]
    rows += [
        (
            f"adapter ÷ full model, {s['variant']} r=8",
            s["adapter_bytes"],
            s["full_model_bytes"],
            s["ratio"],
            f"{GOALS['adapter_' + s['variant']]} "
            f"({goal_text(s['ratio'], GOALS['adapter_' + s['variant']])})",
        )
        for s in shares
    ]
    write(report, args.out, table(["figure", "bytes", "of bytes", "ratio", "goal"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
