"""The web UI's HTTPS certificate: a configured one (`[web] tls_cert_file` / `tls_key_file`), or a self-signed
one the agent makes on first start and keeps in its data directory.

The self-signed certificate is ECDSA P-256 (quick to make on a Raspberry Pi, accepted by every browser), valid
397 days, for the box's host name, `localhost`, 127.0.0.1, ::1 and the box's own addresses. The key file is
0600 in a 0700 folder. It is made again when missing, unreadable, expired or within 30 days of expiry, or when
the box's host name changed. Its SHA-256 fingerprint is logged at every start: the technician's browser warns
about a self-signed certificate, and comparing the fingerprint it shows with the one in the journal is how the
technician knows the warning is about this box and not someone in between.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

TLS_FOLDER = "web-tls"
CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 397  # what browsers accept for a certificate's lifetime, and about a year between renewals
RENEW_WITHIN = dt.timedelta(days=30)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertificateError(Exception):
    """The configured certificate or key cannot be used, or the self-signed one cannot be written."""


@dataclass(frozen=True)
class ServerCertificate:
    cert_file: Path
    key_file: Path
    fingerprint_sha256: str  # "AB:CD:...", as browsers show it
    not_after: dt.datetime
    self_signed: bool
    generated: bool  # made at this start


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def box_addresses(extra_hosts: Iterable[str] = ()) -> list[IpAddress]:
    """The addresses a technician may type: loopback, what the host name resolves to, the address of the
    default route (found by a UDP connect, which sends nothing), and any literal address in `extra_hosts`."""
    found: set[IpAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(str(s.getsockname()[0]).split("%")[0]))
    for host in extra_hosts:
        with contextlib.suppress(ValueError):
            found.add(ipaddress.ip_address(host))
    return sorted((a for a in found if not a.is_unspecified), key=lambda a: (a.version, int(a)))


def _names(hostname: str) -> list[str]:
    names = [hostname, "localhost"] if hostname and hostname != "localhost" else ["localhost"]
    return [n for n in names if n]


def make_self_signed(
    hostname: str, addresses: Iterable[IpAddress], *, now: dt.datetime | None = None, days: int = VALID_DAYS
) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for `hostname`, `localhost` and `addresses`."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, (hostname or "localhost")[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Store Edge Agent (self-signed)"),
    ])
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in _names(hostname)]
    alt_names += [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # a box whose clock is a little behind still accepts it
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, with `mode` from the first byte (the key is never readable by others, not even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _load(cert_file: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return None


def _reason_to_renew(cert: x509.Certificate | None, key_file: Path, hostname: str, now: dt.datetime) -> str | None:
    if cert is None:
        return "there is none yet"
    if not key_file.is_file():
        return "its key is missing"
    if cert.not_valid_after_utc - now < RENEW_WITHIN:
        return f"it expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it names no host"
    if hostname and hostname not in names.get_values_for_type(x509.DNSName):
        return f"the host name is now {hostname}"
    return None


def ensure_certificate(
    data_dir: Path,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    hostname: str | None = None,
    extra_hosts: Iterable[str] = (),
    now: dt.datetime | None = None,
) -> ServerCertificate:
    """The configured certificate (checked, never replaced), else the self-signed one in
    `data_dir/web-tls/`, made or renewed as needed."""
    now = now or dt.datetime.now(dt.UTC)
    if cert_file is not None and key_file is not None:
        cert = _load(cert_file)
        if cert is None:
            raise CertificateError(f"web.tls_cert_file: {cert_file} is not a PEM certificate")
        try:
            serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise CertificateError(
                f"web.tls_key_file: {key_file} is not an unencrypted PEM private key: {exc}"
            ) from None
        try:  # what uvicorn will do: a key that does not match the certificate fails here, with its key path
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert_file), str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"web.tls_key_file: {key_file} does not go with {cert_file}: {exc}") from None
        if cert.not_valid_after_utc < now:
            log.error("web.tls_cert_file %s expired on %s: browsers will refuse it", cert_file,
                      cert.not_valid_after_utc.date())
        return ServerCertificate(cert_file, key_file, fingerprint(cert), cert.not_valid_after_utc,
                                 self_signed=cert.issuer == cert.subject, generated=False)
    folder = Path(data_dir) / TLS_FOLDER
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    host = socket.gethostname() if hostname is None else hostname
    current = _load(cert_path)
    reason = _reason_to_renew(current, key_path, host, now)
    if reason is None and current is not None:
        return ServerCertificate(cert_path, key_path, fingerprint(current), current.not_valid_after_utc,
                                 self_signed=True, generated=False)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_pem, key_pem = make_self_signed(host, box_addresses(extra_hosts), now=now)
        _write(key_path, key_pem, 0o600)
        _write(cert_path, cert_pem, 0o644)
    except OSError as exc:
        raise CertificateError(f"cannot write the web UI's certificate in {folder}: {exc}") from None
    cert = x509.load_pem_x509_certificate(cert_pem)
    log.info("made a self-signed certificate for the web UI (%s), valid until %s", reason,
             cert.not_valid_after_utc.date())
    return ServerCertificate(cert_path, key_path, fingerprint(cert), cert.not_valid_after_utc,
                             self_signed=True, generated=True)
