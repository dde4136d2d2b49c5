"""Tests for deploy.keys: the CA, the SuperLink's TLS certificate and SuperNode keys.

The TLS tests do a real handshake with Python's ``ssl`` module, because a certificate
that parses fine can still be rejected by a TLS stack (wrong SAN, missing EKU, ...).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from common.errors import PrivatuneError
from deploy.keys import describe, make_node_keys, make_server_keys

HOSTS = ["superlink.example.org", "coordinator"]
IPS = ["10.0.0.5", "2001:db8::1"]


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("server")
    make_server_keys(out, hosts=HOSTS, ips=IPS)
    return out


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other")
    return make_server_keys(out, hosts=["superlink.example.org"])["ca.crt"]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----------------------------------------------------------------- server keys


def test_server_keys_returns_all_paths(tmp_path: Path) -> None:
    paths = make_server_keys(tmp_path / "new", hosts=["a.example"])
    assert set(paths) == {"ca.crt", "ca.key", "server.pem", "server.key"}
    assert all(p.is_file() and p.parent == tmp_path / "new" for p in paths.values())


def test_server_cert_is_issued_by_ca(server_dir: Path) -> None:
    ca = _cert(server_dir / "ca.crt")
    server = _cert(server_dir / "server.pem")
    server.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)


def test_ca_is_a_ca(server_dir: Path) -> None:
    ca = _cert(server_dir / "ca.crt")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp384r1"


def test_server_cert_sans_eku_and_cn(server_dir: Path) -> None:
    server = _cert(server_dir / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert dns == [*HOSTS, "localhost"]
    assert ips == [ipaddress.ip_address(ip) for ip in [*IPS, "127.0.0.1"]]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cn = server.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["superlink.example.org"]


def test_loopback_not_duplicated_and_ip_host_becomes_ip_san(tmp_path: Path) -> None:
    make_server_keys(tmp_path, hosts=["LOCALHOST", "192.168.1.2"], ips=["127.0.0.1"])
    san = _cert(tmp_path / "server.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "192.168.1.2",
    ]


def test_file_modes(server_dir: Path) -> None:
    assert _mode(server_dir / "ca.key") == 0o600
    assert _mode(server_dir / "server.key") == 0o600
    assert _mode(server_dir / "ca.crt") == 0o644
    assert _mode(server_dir / "server.pem") == 0o644


def test_private_keys_are_unencrypted_pkcs8(server_dir: Path) -> None:
    for name in ("ca.key", "server.key"):
        data = (server_dir / name).read_bytes()
        assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
        serialization.load_pem_private_key(data, password=None)
    server_key = serialization.load_pem_private_key(
        (server_dir / "server.key").read_bytes(), password=None
    )
    assert server_key.public_key() == _cert(server_dir / "server.pem").public_key()


def test_overwrite_refused_then_allowed(tmp_path: Path) -> None:
    first = make_server_keys(tmp_path, hosts=["a.example"])
    before = first["ca.crt"].read_bytes()
    with pytest.raises(PrivatuneError, match=r"ca\.crt.*--overwrite"):
        make_server_keys(tmp_path, hosts=["a.example"])
    assert first["ca.crt"].read_bytes() == before
    make_server_keys(tmp_path, hosts=["a.example"], overwrite=True)
    assert first["ca.crt"].read_bytes() != before
    assert _mode(first["ca.key"]) == 0o600


def test_refusal_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "server.key").write_text("keep me")
    with pytest.raises(PrivatuneError, match=r"server\.key"):
        make_server_keys(tmp_path, hosts=["a.example"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hosts": []}, "--host"),
        ({"hosts": ["bad host"]}, "--host"),
        ({"hosts": ["-leading.example"]}, "--host"),
        ({"hosts": ["a" * 60 + ".example.org"]}, "64"),
        ({"hosts": ["a" * 64 + ".example"]}, "63"),
        ({"hosts": ["ok.example"], "ips": ["10.0.0"]}, "--ip"),
        ({"hosts": ["ok.example"], "days": 0}, "--days"),
        ({"hosts": "ok.example"}, "list"),
    ],
)
def test_bad_server_inputs(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(PrivatuneError, match=match):
        make_server_keys(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_non_ascii_host_suggests_punycode(tmp_path: Path) -> None:
    with pytest.raises(PrivatuneError, match="xn--"):
        make_server_keys(tmp_path, hosts=["bücher.example"])


# ------------------------------------------------------------------- TLS check


def _handshake(server_dir: Path, cafile: Path, server_hostname: str) -> None:
    """One TLS handshake against a throwaway loopback server using server.pem/key."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_dir / "server.pem", server_dir / "server.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as err:  # the client's rejection lands here
                errors.append(err)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(timeout=5)


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "superlink.example.org"])
def test_tls_handshake_with_ca(server_dir: Path, hostname: str) -> None:
    _handshake(server_dir, server_dir / "ca.crt", hostname)


def test_tls_handshake_rejects_other_ca(server_dir: Path, other_ca: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_dir, other_ca, "localhost")


def test_tls_handshake_rejects_unlisted_name(server_dir: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_dir, server_dir / "ca.crt", "elsewhere.example.org")


# ------------------------------------------------------------------- node keys


def test_node_keys(tmp_path: Path) -> None:
    private, public = make_node_keys(tmp_path, name="hospital-a")
    assert (private.name, public.name) == ("hospital-a.key", "hospital-a.pub")
    assert _mode(private) == 0o600

    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)

    line = public.read_text()
    assert line.endswith(" hospital-a\n") and line.count("\n") == 1
    assert line.startswith("ecdsa-sha2-nistp384 AAAA")
    pub = serialization.load_ssh_public_key(line.encode())
    assert pub == key.public_key()


def test_node_keys_overwrite(tmp_path: Path) -> None:
    private, _ = make_node_keys(tmp_path, name="org_1")
    before = private.read_bytes()
    with pytest.raises(PrivatuneError, match=r"org_1\.key"):
        make_node_keys(tmp_path, name="org_1")
    assert private.read_bytes() == before
    make_node_keys(tmp_path, name="org_1", overwrite=True)
    assert private.read_bytes() != before


@pytest.mark.parametrize("name", ["", "a b", "../evil", "org.1", "x" * 65, "é"])
def test_invalid_node_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(PrivatuneError, match="letters, digits, '-' and '_'"):
        make_node_keys(tmp_path, name=name)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- describe


def test_describe_files(server_dir: Path, tmp_path: Path) -> None:
    server = describe(server_dir / "server.pem")
    assert "CN=superlink.example.org" in server and "TLS server" in server
    assert "DNS:localhost" in server and "IP:127.0.0.1" in server and "expires" in server
    assert "CA" in describe(server_dir / "ca.crt")
    assert "EC secp384r1 private key (PEM)" in describe(server_dir / "server.key")
    assert "WARNING" not in describe(server_dir / "server.key")

    private, public = make_node_keys(tmp_path, name="org")
    assert "EC secp384r1 private key (OpenSSH)" in describe(private)
    assert describe(public) == "org.pub: EC secp384r1 public key (OpenSSH) for org"


def test_describe_warns_about_readable_key_and_rejects_junk(tmp_path: Path) -> None:
    private, _ = make_node_keys(tmp_path, name="org")
    private.chmod(0o644)
    assert "chmod 600" in describe(private)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    with pytest.raises(PrivatuneError, match="junk.txt"):
        describe(junk)
    with pytest.raises(PrivatuneError, match="missing"):
        describe(tmp_path / "missing.pem")
