"""`privatune keys|coordinator|node`: the deployment roles as commands."""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from client.policy import NodePolicy
from common.errors import PrivatuneError
from common.outcome import outcome_of, summary_text
from deploy import coordinator as coord
from deploy import organisation as org
from deploy.local import wait_port
from deploy.supervise import PIDFILE, supervise
from server.outputs import SUMMARY_FILE


def _keys_server(args: argparse.Namespace) -> int:
    from deploy.keys import describe, make_server_keys

    paths = make_server_keys(Path(args.out), hosts=args.host, ips=args.ip, overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"{name}: {path}\n  {describe(path)}")
    print("Send ca.crt to every organisation; keep ca.key and server.key on this machine only.")
    return 0


def _keys_node(args: argparse.Namespace) -> int:
    from deploy.keys import describe, make_node_keys

    private, public = make_node_keys(Path(args.out), name=args.name, overwrite=args.overwrite)
    print(f"private key (stays here): {private}\n  {describe(private)}")
    print(f"public key (send to the coordinator): {public}\n  {describe(public)}")
    return 0


def _coordinator(args: argparse.Namespace) -> coord.Coordinator:
    return coord.Coordinator(keys=Path(args.keys), state=Path(args.state))


def _coord_start(args: argparse.Namespace) -> int:
    c = _coordinator(args)
    c.state.mkdir(parents=True, exist_ok=True)
    own_host = "127.0.0.1" if args.address in ("0.0.0.0", "::") else args.address
    superlink = coord.superlink_command(c, address=args.address, port=args.port)
    superexec = coord.superexec_command(c, runtime_address=f"{own_host}:{args.port}")
    coord.write_connection(c, control_address=f"{own_host}:{args.port}")
    print(
        f"SuperLink on https://{args.address}:{args.port} (organisations connect here; "
        f"node authentication on; ServerApps run by a SuperExec holding "
        f"{coord.superexec_secret(c)}); state in {c.state}",
        flush=True,
    )
    env = coord.flower_env(c.flwr_home)
    ready = functools.partial(wait_port, args.port, timeout=120)
    return supervise([superlink, superexec], env, ready=ready, pidfile=c.state / PIDFILE)


def _coord_register(args: argparse.Namespace) -> int:
    c = _coordinator(args)
    for key in args.public_keys:
        coord.execute(coord.register_command(Path(key)), c.cli_home)
    return 0


def _coord_run(args: argparse.Namespace) -> int:
    from common.config import load_config

    c = _coordinator(args)
    output = Path(args.output)
    if args.resume:
        from server.resume import check_resumable

        # The saved config unless --config/--set are given (then they must match it).
        given = load_config(args.config, args.set) if args.config or args.set else None
        config, checkpoint = check_resumable(output, given)
        print(f"resuming {output} after round {checkpoint.round}", flush=True)
    else:
        if args.config is None:
            raise PrivatuneError("coordinator run: --config is required (unless --resume)")
        config = load_config(args.config, args.set)
        if (output / "metrics.jsonl").exists() and not args.overwrite:
            raise PrivatuneError(
                f"--output {output} already holds a run; choose another folder, or --resume it"
            )
    folder = c.state / "runs" / time.strftime("%Y%m%d-%H%M%S")
    run_config = coord.write_run_config(
        config, output, folder, resume=args.resume, verbose=args.verbose
    )
    # The summary, not Flower's exit code, says how the run went (a run that failed
    # cleanly exits 0 in Flower's eyes); with no summary, Flower's code is all we have.
    flower_exit = coord.execute(
        coord.run_command(run_config), c.cli_home, check=False, verbose=args.verbose
    )
    summary = output / SUMMARY_FILE
    if not summary.exists():
        raise PrivatuneError(
            f"the run ended (flwr run exit {flower_exit}) without writing {summary}; the "
            "lines above say why"
        )
    from server.report import write_report

    record = json.loads(summary.read_text())
    print(summary_text(record, output))
    print(f"report: {write_report(output)}")
    return outcome_of(record).exit_code


def reachability(address: str, *, timeout: float = 5.0) -> str | None:
    """Why ``HOST:PORT`` cannot be reached over TCP now, or None if it can.

    Flower's SuperNode retries an unreachable SuperLink forever without saying what to
    check; one line at start-up says it.
    """
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
            return None
    except ValueError:
        raise PrivatuneError(
            f"--superlink {address}: expected HOST:PORT, e.g. coordinator.example.org:9092"
        ) from None
    except OSError as exc:
        return (
            f"cannot reach the SuperLink at {address} ({exc.strerror or exc}); the node keeps "
            "retrying. Check the address and port the coordinator gave you, that its "
            "`privatune coordinator start` runs, and that no firewall blocks the port"
        )


def node_banner(policy: NodePolicy) -> str:
    """What this node will enforce, said once at start-up: every policy setting."""
    delta = "min(1e-5, 1/(10·rows))" if policy.max_delta is None else f"{policy.max_delta:g}"
    peers = "from the threshold" if policy.min_secagg_peers is None else policy.min_secagg_peers
    return (
        f"node {policy.name}: data {policy.data_path}; ledger {policy.ledger_path}; "
        f"audit log {policy.audit_path}\n"
        f"  policy: DP required: {policy.require_dp}; max ε {policy.max_epsilon:g} (lifetime) "
        f"at δ {delta}; min noise multiplier {policy.min_noise_multiplier:g}; "
        f"SecAgg+ required: {policy.require_secure_aggregation} (min peers {peers}); "
        f"federated evaluation: {policy.federated_evaluation} (held out "
        f"{policy.eval_fraction:g}); training metrics shared: "
        f"{policy.share_training_metrics}; reproducible noise allowed: "
        f"{policy.allow_reproducible_noise}\n"
        f"  runtime: warm worker: {policy.warm_worker}; preforked ClientApps: {policy.prefork}; "
        f"poll every {policy.poll_interval:g} s"
    )


def _node_start(args: argparse.Namespace) -> int:
    command, policy = org.supernode_command(
        superlink=args.superlink,
        ca=Path(args.ca),
        key=Path(args.key),
        node_config=Path(args.node_config),
        port=args.port,
    )
    print(node_banner(policy), flush=True)
    unreachable = reachability(args.superlink)
    if unreachable:
        print(f"warning: {unreachable}", flush=True)
    env = coord.flower_env(org.state_home(policy))
    processes = [command, org.superexec_command(policy, port=args.port)]
    pidfile = Path(policy.state_dir) / PIDFILE
    if not policy.warm_worker:
        return supervise(processes, env, ready=lambda: None, pidfile=pidfile)
    from client.worker import wait_ready

    worker = org.worker_address(policy)
    ready = functools.partial(wait_ready, worker)
    return supervise([org.worker_command(policy), *processes], env, ready=ready, pidfile=pidfile)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="create TLS and node authentication keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    server = ksub.add_parser("server", help="coordinator: a CA and the SuperLink's TLS certificate")
    server.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem/key")
    server.add_argument("--host", action="append", default=[], help="DNS name (repeatable)")
    server.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    server.add_argument("--overwrite", action="store_true")
    server.set_defaults(func=_keys_server)
    node = ksub.add_parser("node", help="organisation: the node's authentication key pair")
    node.add_argument("--out", required=True)
    node.add_argument("--name", required=True, help="organisation name (letters, digits, -, _)")
    node.add_argument("--overwrite", action="store_true")
    node.set_defaults(func=_keys_node)

    co = sub.add_parser("coordinator", help="coordinator: SuperLink, node registration, runs")
    csub = co.add_subparsers(dest="coordinator_command", required=True)

    def common_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--keys", required=True, help="folder from `privatune keys server`")
        p.add_argument("--state", required=True, help="coordinator state folder")

    start = csub.add_parser("start", help="start the SuperLink (TLS, node authentication)")
    common_args(start)
    start.add_argument("--address", default="0.0.0.0", help="interface to listen on")
    start.add_argument(
        "--port", type=int, default=9092, help="the one HTTPS port (Fleet, Control, Runtime APIs)"
    )
    start.set_defaults(func=_coord_start)
    register = csub.add_parser("register", help="register organisations' public keys")
    common_args(register)
    register.add_argument("public_keys", nargs="+", metavar="ORG.pub")
    register.set_defaults(func=_coord_register)
    run = csub.add_parser("run", help="submit a run and wait for its outputs")
    common_args(run)
    run.add_argument("--config", help="run config TOML (required unless --resume)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    run.add_argument("--output", required=True, help="output folder on this machine")
    run.add_argument("--overwrite", action="store_true")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped run in --output from its last completed round",
    )
    run.set_defaults(func=_coord_run)

    nd = sub.add_parser("node", help="organisation: run this organisation's node")
    nsub = nd.add_subparsers(dest="node_command", required=True)
    nstart = nsub.add_parser("start", help="start the SuperNode with the local policy")
    nstart.add_argument("--superlink", required=True, help="coordinator HOST:PORT")
    nstart.add_argument("--ca", required=True, help="the coordinator's ca.crt")
    nstart.add_argument("--key", required=True, help="this organisation's private key")
    nstart.add_argument("--node-config", required=True, help="node.toml (data, policy)")
    nstart.add_argument("--port", type=int, default=9094, help="local ClientApp runtime port")
    nstart.set_defaults(func=_node_start)
