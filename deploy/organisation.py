"""An organisation's node: a Flower SuperNode bound to its local privacy policy.

The node config file (client/policy.py) is validated before anything starts; the
SuperNode then passes its path (and the audit log's) to every ClientApp process, which
enforces the policy and keeps the ledger and audit log in the node's state folder. Unless
the node config says ``warm-worker = false``, a long-lived worker process (client/worker.py)
does the training, so a round does not pay for importing torch and loading the model.

The SuperNode runs in Flower's *process* isolation mode: it only queues each message's
task, and a separate SuperExec on the same machine (deploy/superexec.py, Flower's own
with a preloaded fork in place of a fresh Python per task) starts the ClientApp process.
The two share a secret in the node's state folder, so no other local process that can
reach the SuperNode's Runtime API (127.0.0.1 only) can take the node's tasks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomli_w

from client.audit import AUDIT_PATH_KEY
from client.node_config import NODE_CONFIG_FILE_KEY
from client.policy import NodePolicy, load_policy
from client.worker import WorkerAddress
from common.errors import PrivatuneError
from deploy.keys import shared_secret


def check_files(ca: Path, key: Path) -> None:
    if not ca.is_file():
        raise PrivatuneError(f"--ca {ca}: no such file; ask the coordinator for ca.crt")
    if not key.is_file():
        raise PrivatuneError(
            f"--key {key}: no such file; create it with `privatune keys node --out DIR --name ORG` "
            "and send ORG.pub to the coordinator"
        )


def supernode_command(
    *, superlink: str, ca: Path, key: Path, node_config: Path, port: int
) -> tuple[list[str], NodePolicy]:
    """The SuperNode command line for this organisation, after validating its node config."""
    check_files(ca, key)
    policy = resolved(load_policy(node_config))
    Path(policy.state_dir).mkdir(parents=True, exist_ok=True)
    # Client processes may run from another directory: hand them absolute paths only.
    frozen = Path(policy.state_dir) / "node.resolved.toml"
    frozen.write_text(tomli_w.dumps(policy.model_dump(by_alias=True, exclude_none=True)))
    pairs = f'{NODE_CONFIG_FILE_KEY}="{frozen}" {AUDIT_PATH_KEY}="{policy.audit_path}"'
    if policy.warm_worker:
        pairs += " " + worker_address(policy).node_config_pairs()
    ca, key = ca.resolve(), key.resolve()
    command = [
        sys.executable, "-m", "deploy.supernode",  # flower-supernode, shorter idle poll
        "--poll-interval", str(policy.poll_interval),
        "--superlink", superlink,
        "--root-certificates", str(ca),
        "--auth-supernode-private-key", str(key),
        "--node-config", pairs,
        "--isolation", "process",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--superexec-auth-secret-file", str(superexec_secret(policy)),
    ]  # fmt: skip
    return command, policy


def superexec_secret(policy: NodePolicy) -> Path:
    return shared_secret(Path(policy.state_dir) / "superexec.secret")


def superexec_command(policy: NodePolicy, *, port: int) -> list[str]:
    """The SuperExec that starts this node's ClientApp processes (see the module doc)."""
    launcher = (
        [sys.executable, "-m", "deploy.superexec"] if policy.prefork else ["flower-superexec"]
    )
    return [
        *launcher,
        "--insecure",  # plain HTTP on loopback, to this node's own SuperNode
        "--runtime-api-address", f"127.0.0.1:{port}",
        "--superexec-auth-secret-file", str(superexec_secret(policy)),
    ]  # fmt: skip


def worker_address(policy: NodePolicy) -> WorkerAddress:
    return WorkerAddress.in_state_dir(policy.state_dir)


def worker_command(policy: NodePolicy) -> list[str]:
    """The node's warm worker (client/worker.py), in this Python environment."""
    return [sys.executable, "-m", "client.worker", "--state-dir", str(policy.state_dir)]


def resolved(policy: NodePolicy) -> NodePolicy:
    """Relative paths in the node config are relative to where the node was started."""
    return policy.model_copy(
        update={
            "data_path": str(Path(policy.data_path).resolve()),
            "state_dir": str(Path(policy.state_dir).resolve()),
        }
    )


def state_home(policy: NodePolicy) -> Path:
    return Path(policy.state_dir) / "flwr-home"
