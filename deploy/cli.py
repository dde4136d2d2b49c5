"""`privatune keys|coordinator|node`: the deployment roles as commands."""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from common.errors import PrivatuneError
from deploy import coordinator as coord
from deploy import organisation as org
from deploy.local import wait_port
from deploy.supervise import supervise


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
    return supervise([superlink, superexec], env, ready=ready)


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
    run_config = coord.write_run_config(config, output, folder, resume=args.resume)
    coord.execute(coord.run_command(run_config), c.cli_home)
    summary = output / "summary.json"
    if not summary.exists():
        raise PrivatuneError(f"the run ended without writing {summary}; see the SuperLink log")
    from simulations.report import write_report

    print(json.dumps(json.loads(summary.read_text()), indent=2))
    print(f"report: {write_report(output)}")
    return 0


def _node_start(args: argparse.Namespace) -> int:
    command, policy = org.supernode_command(
        superlink=args.superlink,
        ca=Path(args.ca),
        key=Path(args.key),
        node_config=Path(args.node_config),
        port=args.port,
    )
    print(
        f"node {policy.name}: data {policy.data_path}; ledger {policy.ledger_path}; "
        f"audit log {policy.audit_path}; DP required: {policy.require_dp}; "
        f"max ε {policy.max_epsilon}; warm worker: {policy.warm_worker}; "
        f"preforked ClientApps: {policy.prefork}",
        flush=True,
    )
    env = coord.flower_env(org.state_home(policy))
    processes = [command, org.superexec_command(policy, port=args.port)]
    if not policy.warm_worker:
        return supervise(processes, env, ready=lambda: None)
    from client.worker import wait_ready

    worker = org.worker_address(policy)
    ready = functools.partial(wait_ready, worker)
    return supervise([org.worker_command(policy), *processes], env, ready=ready)


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
