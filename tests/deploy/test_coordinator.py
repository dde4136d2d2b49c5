"""The coordinator's command lines: TLS, node authentication, and a private ServerApp runtime."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.errors import PrivatuneError
from deploy.coordinator import Coordinator, superexec_command, superexec_secret, superlink_command
from deploy.keys import make_server_keys


def test_superlink_runs_with_tls_auth_and_process_isolation(tmp_path: Path) -> None:
    """The SuperLink needs TLS files, node auth, and only a secret-holding SuperExec."""
    make_server_keys(tmp_path / "keys", hosts=["localhost"])
    c = Coordinator(keys=tmp_path / "keys", state=tmp_path / "state")
    cmd = superlink_command(c, address="127.0.0.1", port=9092)
    assert "--enable-supernode-auth" in cmd
    assert "--insecure" not in cmd
    assert cmd[cmd.index("--isolation") + 1] == "process"
    assert cmd[cmd.index("--superexec-auth-secret-file") + 1] == str(superexec_secret(c))
    assert "--disable-runtime-dependency-installation" in cmd
    assert cmd[cmd.index("--ssl-certfile") + 1].endswith("server.pem")
    assert cmd[cmd.index("--ssl-ca-certfile") + 1].endswith("ca.crt")
    secret = superexec_secret(c)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text()) == 64
    assert superexec_secret(c).read_text() == secret.read_text()  # created once, reused
    exe = superexec_command(c, runtime_address="127.0.0.1:9092")
    assert exe[exe.index("--superexec-auth-secret-file") + 1] == str(secret)
    assert "--insecure" not in exe


def test_missing_keys_are_named(tmp_path: Path) -> None:
    """Starting without keys says which files are missing and how to make them."""
    c = Coordinator(keys=tmp_path / "nokeys", state=tmp_path / "state")
    with pytest.raises(PrivatuneError, match="missing ca.crt, server.pem, server.key"):
        superlink_command(c, address="127.0.0.1", port=9092)
