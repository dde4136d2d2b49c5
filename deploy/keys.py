"""Key material for a Flower deployment with TLS and SuperNode authentication.

A real deployment needs two kinds of keys, and both are easy to get subtly wrong by
hand with ``openssl``:

* TLS for the SuperLink: a private CA (``ca.crt``/``ca.key``) and a server certificate
  (``server.pem``/``server.key``) it signs. SuperNodes and ``flwr`` trust only
  ``ca.crt``, so no public CA is involved and the certificate's subjectAltName must
  list every name and address the organisations dial.
* SuperNode authentication: one ECDSA key pair per organisation in OpenSSH format.
  The organisation keeps ``<name>.key``; the coordinator registers ``<name>.pub``.

All keys are ECDSA on NIST P-384 (SECP384R1). Flower 1.41 only accepts NIST curves
for SuperNode keys, and using the same curve for the CA and TLS keeps one algorithm
in play; P-384 keys generate in milliseconds (RSA 3072 takes far longer, which
matters for tests), give ~192-bit security (above RSA 3072's ~128) and are supported
by gRPC's TLS stack. Nothing here implements cryptography: every operation is a call
into the ``cryptography`` package.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.atomic import write_bytes_atomic
from common.errors import PrivatuneError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_T = TypeVar("_T")

CURVE = ec.SECP384R1
"""The curve of every key made here; Flower's SuperNode auth requires a NIST curve."""

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644

# Clocks on organisation machines drift; a certificate valid "from now" is rejected by
# a peer whose clock is a minute behind, so validity starts a little in the past.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_X509_CN_MAX = 64  # RFC 5280 upper bound for commonName

_NODE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"^(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*$")

SERVER_FILES = ("ca.crt", "ca.key", "server.pem", "server.key")


# --------------------------------------------------------------------------- API


def make_server_keys(
    out: Path,
    *,
    hosts: list[str],
    ips: Sequence[str] = (),
    days: int = 825,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Create a private CA and the SuperLink's TLS certificate signed by it.

    Writes ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` into ``out`` and
    returns their paths keyed by file name. ``hosts`` are DNS names (the first becomes
    the CN), ``ips`` IP addresses; "localhost" and "127.0.0.1" are always added so
    loopback tests and a SuperNode on the same machine verify. A host that is an IP
    literal is put in the certificate as an IP address, because a DNS entry would
    never match it. The default of 825 days is the longest lifetime that Apple
    platforms accept for TLS server certificates.

    Nothing is written if any of the four files exists and ``overwrite`` is false, so
    an existing CA that organisations already trust is never replaced by accident.
    """
    dns_names, ip_addrs = _subject_alt_names(hosts, ips)
    common_name = _common_name(hosts[0])
    _check_days(days)
    paths = {name: Path(out) / name for name in SERVER_FILES}
    _prepare_out_dir(Path(out))
    _refuse_existing(list(paths.values()), overwrite)

    not_before, not_after = _validity(days)
    ca_key = ec.generate_private_key(CURVE())
    ca_cert = _build_ca_cert(ca_key, common_name, not_before, not_after)
    server_key = ec.generate_private_key(CURVE())
    server_cert = _build_server_cert(
        server_key, ca_key, ca_cert, common_name, (dns_names, ip_addrs), (not_before, not_after)
    )

    _write_file(paths["ca.key"], _pkcs8_pem(ca_key), PRIVATE_MODE)
    _write_file(paths["server.key"], _pkcs8_pem(server_key), PRIVATE_MODE)
    _write_file(paths["ca.crt"], _cert_pem(ca_cert), PUBLIC_MODE)
    _write_file(paths["server.pem"], _cert_pem(server_cert), PUBLIC_MODE)
    return paths


def make_node_keys(out: Path, *, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Create an organisation's SuperNode authentication key pair.

    Returns ``(private, public)``: ``<name>.key`` (OpenSSH private key, mode 0600,
    passed to ``flower-supernode --auth-supernode-private-key``) and ``<name>.pub``
    (one OpenSSH line ending in ``name``, registered on the SuperLink with
    ``flwr supernode register``). The ``name`` is the comment in the public key so the
    coordinator can tell registered keys apart.
    """
    _check_node_name(name)
    private_path = Path(out) / f"{name}.key"
    public_path = Path(out) / f"{name}.pub"
    _prepare_out_dir(Path(out))
    _refuse_existing([private_path, public_path], overwrite)

    key = ec.generate_private_key(CURVE())
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_file(private_path, private_bytes, PRIVATE_MODE)
    _write_file(public_path, public_line + f" {name}\n".encode("ascii"), PUBLIC_MODE)
    return private_path, public_path


def shared_secret(path: Path) -> Path:
    """A random secret in an owner-only file, created once and reused afterwards.

    Flower's SuperExec and the SuperLink or SuperNode it takes tasks from both read it
    (``--superexec-auth-secret-file``), so that no other process that can reach the
    Runtime API can pose as our executor.
    """
    import os
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def describe(path: Path) -> str:
    """Describe a certificate or key file in one line, for the CLI to print.

    Says what an operator checks before shipping a file: for a certificate its
    subject, issuer, SANs, role and expiry; for a key its type and curve, and a
    warning if a private key is readable by others.
    """
    path = Path(path)
    data = _read_bytes(path)
    for parse in (_describe_cert, _describe_private_key, _describe_public_key):
        text = parse(data)
        if text is not None:
            if "private key" in text:
                text += _permission_warning(path)
            return f"{path.name}: {text}"
    raise PrivatuneError(
        f"{path}: not a PEM certificate, PEM/OpenSSH private key or public key; "
        "pass a file created by `privatune keys server` or `privatune keys node`"
    )


# ------------------------------------------------------------------- validation


def _subject_alt_names(
    hosts: Sequence[str], ips: Sequence[str]
) -> tuple[list[str], list[IPAddress]]:
    """Validate hosts and IPs and add the loopback names, keeping the given order."""
    if isinstance(hosts, str) or isinstance(ips, str):
        raise PrivatuneError("hosts and ips must be lists of strings, not a single string")
    if not hosts:
        raise PrivatuneError(
            "no host given (--host): name the DNS name SuperNodes use to reach the "
            "SuperLink, e.g. --host superlink.example.org"
        )
    dns_names: list[str] = []
    ip_addrs: list[IPAddress] = [_parse_ip(ip) for ip in ips]
    for host in hosts:
        as_ip = _try_ip(host)
        if as_ip is not None:
            ip_addrs.append(as_ip)
        else:
            dns_names.append(_check_dns_name(host))
    dns_names.append("localhost")
    ip_addrs.append(ipaddress.ip_address("127.0.0.1"))
    return _unique(dns_names), _unique(ip_addrs)


def _check_dns_name(host: str) -> str:
    """Return a normalised DNS name, or explain why ``host`` cannot be one."""
    name = host.strip().rstrip(".").lower()
    if not name.isascii():
        raise PrivatuneError(
            f"host {host!r} (--host) is not ASCII: give its punycode form ({_punycode(host)})"
        )
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise PrivatuneError(
            f"host {host!r} (--host) is not a valid DNS name: use labels of letters, "
            "digits and '-' (at most 63 each) separated by dots, e.g. superlink.example.org"
        )
    return name


def _common_name(first_host: str) -> str:
    """The first host as the CN; limited to 64 characters, unlike SAN entries."""
    addr = _try_ip(first_host)
    name = str(addr) if addr is not None else _check_dns_name(first_host)
    if len(name) > _X509_CN_MAX:
        raise PrivatuneError(
            f"first host {name!r} (--host) is longer than {_X509_CN_MAX} characters, "
            "the limit for a certificate's common name: list a shorter name first"
        )
    return name


def _punycode(host: str) -> str:
    """The punycode form to suggest in an error, if Python can produce it."""
    try:
        return host.strip().encode("idna").decode("ascii")
    except UnicodeError:
        return "xn--..."


def _try_ip(text: str) -> IPAddress | None:
    """Parse ``text`` as an IP address, or return None if it is not one."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _parse_ip(text: str) -> IPAddress:
    """Parse an ``--ip`` value, naming the flag if it is not an address."""
    addr = _try_ip(str(text))
    if addr is None:
        raise PrivatuneError(
            f"ip {text!r} (--ip) is not an IPv4 or IPv6 address, e.g. 10.0.0.5; "
            "put DNS names in --host"
        )
    return addr


def _unique(items: list[_T]) -> list[_T]:
    """Drop repeats, keeping the first occurrence, so SANs stay in the given order."""
    return list(dict.fromkeys(items))


def _check_days(days: int) -> None:
    """A certificate needs a positive lifetime."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise PrivatuneError(f"days={days!r} (--days) must be a whole number of days >= 1")


def _check_node_name(name: str) -> None:
    """The name becomes a file name and the key comment, so keep it plain."""
    if not isinstance(name, str) or not _NODE_NAME.match(name):
        raise PrivatuneError(
            f"node name {name!r} (--name) may contain only letters, digits, '-' and '_' "
            "(1-64 characters), e.g. --name hospital-a"
        )


# ----------------------------------------------------------------- certificates


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    """Validity window shared by the CA and the server certificate."""
    now = dt.datetime.now(dt.UTC)
    return now - _CLOCK_SKEW, now + dt.timedelta(days=days)


def _build_ca_cert(
    key: ec.EllipticCurvePrivateKey,
    first_host: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privatune"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"privatune CA {first_host}"[:64]),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA384())
    )


def _build_server_cert(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    sans_in: tuple[list[str], list[IPAddress]],
    validity: tuple[dt.datetime, dt.datetime],
) -> x509.Certificate:
    """The SuperLink's TLS certificate; clients match the SAN, not the CN."""
    dns_names, ip_addrs = sans_in
    not_before, not_after = validity
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(a) for a in ip_addrs]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """CA keys sign certificates and CRLs; the server key signs TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pkcs8_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS8 PEM: the SuperLink starts unattended and cannot ask for a pass."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------------------------ files


def _prepare_out_dir(out: Path) -> None:
    """Create the output directory, naming it if that is impossible."""
    if out.exists() and not out.is_dir():
        raise PrivatuneError(f"{out} exists and is not a directory: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PrivatuneError(f"cannot create {out} ({err.strerror}): choose another --out") from err


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Check every target before writing any, so a refusal leaves nothing half-written."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing:
        names = ", ".join(str(p) for p in existing)
        raise PrivatuneError(
            f"{names} already exists; refusing to replace key material others may "
            "already trust. Choose another --out, or pass --overwrite to replace it"
        )


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically with ``mode`` set before any byte lands on disk.

    The temporary file is created with the final mode, so a private key is never
    briefly world-readable, and the rename means a crash never leaves a truncated key.
    """
    try:
        write_bytes_atomic(path, data, mode=mode)
    except OSError as err:
        raise PrivatuneError(
            f"cannot write {path} ({err.strerror}): check the directory's permissions"
        ) from err


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise PrivatuneError(f"cannot read {path} ({err.strerror})") from err


def _permission_warning(path: Path) -> str:
    """Flag private keys that group or others can read; Flower does not check."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return f"; WARNING: mode {mode:04o} lets others read it, run: chmod 600 {path}"
    return ""


# --------------------------------------------------------------------- describe


def _describe_cert(data: bytes) -> str | None:
    """Describe the first certificate in a PEM file, or None if there is none."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return None
    cert = certs[0]
    parts = [f"certificate {cert.subject.rfc4514_string()}"]
    if cert.issuer == cert.subject:
        parts.append("self-signed")
    else:
        parts.append(f"issued by {cert.issuer.rfc4514_string()}")
    parts.append(_cert_role(cert))
    sans = _cert_sans(cert)
    if sans:
        parts.append(f"SAN {sans}")
    parts.append(f"{_key_kind(cert.public_key())} key")
    parts.append(_expiry(cert))
    if len(certs) > 1:
        parts.append(f"+{len(certs) - 1} more in chain")
    return ", ".join(parts)


def _cert_role(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "CA"
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "end entity"
    return "TLS server" if ExtendedKeyUsageOID.SERVER_AUTH in eku else "end entity"


def _cert_sans(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    dns = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    ips = [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)]
    return " ".join(dns + ips)


def _expiry(cert: x509.Certificate) -> str:
    end = cert.not_valid_after_utc
    left = (end - dt.datetime.now(dt.UTC)).days
    state = f"{left} days left" if left >= 0 else "EXPIRED"
    return f"expires {end:%Y-%m-%d} ({state})"


def _describe_private_key(data: bytes) -> str | None:
    """Describe a PEM (PKCS8/traditional) or OpenSSH private key."""
    loaders = (
        ("PEM", serialization.load_pem_private_key),
        ("OpenSSH", serialization.load_ssh_private_key),
    )
    for fmt, load in loaders:
        try:
            key = load(data, None)
        except TypeError:
            return f"encrypted {fmt} private key (Flower needs it unencrypted)"
        except (ValueError, UnsupportedAlgorithm):
            continue
        return f"{_key_kind(key)} private key ({fmt})"
    return None


def _describe_public_key(data: bytes) -> str | None:
    """Describe an OpenSSH or PEM public key, keeping the OpenSSH comment."""
    text = data.strip()
    try:
        key = serialization.load_ssh_public_key(text)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, UnsupportedAlgorithm):
            return None
        return f"{_key_kind(key)} public key (PEM)"
    fields = text.split(maxsplit=2)
    comment = f" for {fields[2].decode(errors='replace')}" if len(fields) == 3 else ""
    return f"{_key_kind(key)} public key (OpenSSH){comment}"


def _key_kind(key: object) -> str:
    """Name a key's algorithm and size the way operators talk about it."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__
