"""A node's warm worker: one long-lived process that trains for every ClientApp message.

Why it exists: flwr 1.41's SuperNode starts a fresh ClientApp process for every message.
Importing torch, transformers, peft and opacus costs about 8 s, and loading the model
and tokenising the node's data costs more, so each training message paid ~15 s before
the first step. ``privatune node start`` therefore runs this worker beside the
SuperNode. The ClientApp process (which still receives, masks and audits every message,
and is what Flower sees) forwards ``fit``/``evaluate`` to the worker, whose process keeps
the imports, the model and the data cached (client/runtime.py) across rounds and runs.

The worker runs exactly the code an in-process client runs (:class:`client.app.
PrivatuneClient` on the node's policy, ledger file and data); nothing about privacy
changes. It listens on a Unix socket in the node's state folder, created owner-only, and
every connection must pass multiprocessing's HMAC challenge with a random key kept in a
0600 file beside it, so no other local user can submit work or read replies.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.client import NumPyClient

from client.numpy_client import PrivatuneClient
from common.atomic import write_bytes_atomic
from common.config import RunConfig
from common.errors import PrivatuneError, Refused

log = logging.getLogger("privatune.worker")

WORKER_SOCKET_KEY = "worker-socket"
WORKER_KEY_FILE_KEY = "worker-key-file"
KEY_BYTES = 32


@dataclass(frozen=True)
class WorkerAddress:
    """Where a node's worker listens, and the file holding the key that admits callers."""

    socket: Path
    key_file: Path

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> WorkerAddress:
        state = Path(state_dir).resolve()
        return cls(socket=state / "worker.sock", key_file=state / "worker.key")

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any]) -> WorkerAddress | None:
        if WORKER_SOCKET_KEY not in node_config:
            return None
        return cls(
            socket=Path(str(node_config[WORKER_SOCKET_KEY])),
            key_file=Path(str(node_config[WORKER_KEY_FILE_KEY])),
        )

    def node_config_pairs(self) -> str:
        """The SuperNode ``--node-config`` items that point ClientApps at this worker."""
        return f'{WORKER_SOCKET_KEY}="{self.socket}" {WORKER_KEY_FILE_KEY}="{self.key_file}"'

    def key(self) -> bytes:
        try:
            return self.key_file.read_bytes()
        except OSError as exc:
            raise PrivatuneError(
                f"{self.key_file}: cannot read the node worker's key ({exc.strerror}); "
                "restart the node with `privatune node start`"
            ) from exc

    def create_key(self) -> bytes:
        """A fresh key for each worker start: an old key never admits a new worker's callers."""
        key = secrets.token_bytes(KEY_BYTES)
        write_bytes_atomic(self.key_file, key, mode=0o600)
        return key


# ------------------------------------------------------------------ worker side


def handle(kind: str, request: dict[str, Any]) -> Any:
    """Run one ``fit``/``evaluate`` exactly as an in-process client would.

    The SecAgg+ session the request came through travels from the ClientApp process
    (whose guard saw the protocol, client/secagg.py) and is restored here, so the worker
    knows what the in-process client would: whether the request was secure, and among
    which nodes.
    """
    from client.secagg import SecureSession, secure_session

    context = Context(
        run_id=request["run_id"],
        node_id=request["node_id"],
        node_config=request["node_config"],
        state=RecordDict(),  # unused on nodes: their ledger is the policy's file
        run_config={},
    )
    client = PrivatuneClient(request["config"], context)
    method = {"fit": client.fit, "evaluate": client.evaluate}[kind]
    wire = request.get("secure_session")
    with secure_session(None if wire is None else SecureSession.from_wire(wire)):
        return method(request["parameters"], request["fit_config"])


def serve(address: WorkerAddress, *, max_requests: int | None = None) -> None:
    """Answer requests one at a time (a SuperNode runs one message at a time) until killed."""
    import client.local_round  # noqa: F401  -- the torch stack, imported once, before any round

    key = address.create_key()
    address.socket.unlink(missing_ok=True)
    old_umask = os.umask(0o077)  # the socket is owner-only from the moment it exists
    try:
        listener = Listener(str(address.socket), family="AF_UNIX", authkey=key)
    finally:
        os.umask(old_umask)
    log.info("node worker ready on %s", address.socket)
    served = 0
    with listener:
        while max_requests is None or served < max_requests:
            try:
                conn = listener.accept()
            except AuthenticationError:
                log.warning("node worker: refused a caller without the node's key")
                continue
            except (OSError, EOFError):  # a readiness probe that hung up
                continue
            with conn:
                kind, request = conn.recv()
                started = time.perf_counter()
                try:
                    conn.send(("ok", handle(kind, request)))
                    log.info("%s done in %.2f s", kind, time.perf_counter() - started)
                except Refused as exc:  # a decision, not a failure: no traceback
                    log.warning("node worker: %s refused: %s", kind, exc)
                    conn.send(("refused", str(exc)))
                except Exception as exc:  # noqa: BLE001 -- the ClientApp re-raises it
                    log.exception("node worker: %s failed", kind)
                    conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            served += 1


def wait_ready(address: WorkerAddress, *, timeout: float = 300.0) -> None:
    """Block until the worker accepts connections (its imports take seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(str(address.socket)) == 0:
                return
        time.sleep(0.2)
    raise PrivatuneError(f"the node worker did not start listening on {address.socket}")


# ------------------------------------------------------------------ ClientApp side


class WorkerClient(NumPyClient):
    """The ClientApp's client on a node with a worker: forwards each call to it."""

    def __init__(self, config: RunConfig, context: Context, address: WorkerAddress) -> None:
        self.address = address
        self.request = {
            "config": config,
            "node_config": dict(context.node_config),
            "run_id": context.run_id,
            "node_id": context.node_id,
        }

    def _call(self, kind: str, parameters: list, fit_config: dict) -> Any:
        from client.secagg import current_session

        session = current_session()
        request = {
            **self.request,
            "parameters": parameters,
            "fit_config": dict(fit_config),
            "secure_session": None if session is None else session.to_wire(),
        }
        try:
            conn = Client(str(self.address.socket), family="AF_UNIX", authkey=self.address.key())
        except (FileNotFoundError, ConnectionRefusedError):
            log.warning(
                "node worker not reachable at %s; running %s in this process (slower)",
                self.address.socket,
                kind,
            )
            return handle(kind, request)
        with conn:
            conn.send((kind, request))
            status, *value = conn.recv()
        if status == "refused":
            raise Refused(value[0])
        if status != "ok":
            message, remote_traceback = value
            log.error("node worker traceback:\n%s", remote_traceback)
            raise RuntimeError(f"node worker: {message}")
        return value[0]

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        return self._call("fit", parameters, config)

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        return self._call("evaluate", parameters, config)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client.worker --state-dir DIR``: run a node's worker (node start does)."""
    parser = argparse.ArgumentParser(prog="python -m client.worker", description=__doc__)
    parser.add_argument("--state-dir", required=True, help="the node's state folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(WorkerAddress.in_state_dir(args.state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
