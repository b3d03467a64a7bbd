"""A local certificate authority and one certificate per party, for the mutual-TLS gRPC link
between the media and the advertiser party (``federated.transport``).

Usage::

    python -m federated.certs --out CERT_DIR [--parties media,advertiser]
                              [--hosts localhost,127.0.0.1] [--days 30]

Writes ``ca.pem`` and ``ca.key`` (a self-signed CA) and, for each party, ``<party>.pem`` and
``<party>.key``: an EC P-256 key and a certificate signed by the CA whose common name is the
party's name, whose subject alternative names are the hosts (DNS names and IP addresses) plus
the party's name as a DNS name, and whose extended key usage allows both TLS server and client
authentication (each party serves and calls). Keys are written with mode 0600; every file is
written atomically. This is for local and test runs: in production each party's certificate
comes from the organisations' own PKI and only the CA certificates are exchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.tables import print_table

DEFAULT_PARTIES = ("media", "advertiser")
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
CA_COMMON_NAME = "extcvr federated local CA"
#: Party names become common names, DNS names and file names: lower-case DNS labels.
_PARTY_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
#: Certificates are valid from a few minutes in the past, for clocks slightly out of step.
_CLOCK_SKEW = dt.timedelta(minutes=5)


def _hint(cert_dir: str) -> str:
    return f"run python -m federated.certs --out {cert_dir}"


@dataclass(frozen=True)
class PartyCredentials:
    """Where one party's TLS material lives: the CA certificate both parties trust, the party's
    certificate and its private key (PEM files)."""

    ca: str
    cert: str
    key: str

    def __post_init__(self):
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"PartyCredentials.{name}: expected a non-empty path, "
                                 f"got {value!r}")

    @classmethod
    def for_party(cls, cert_dir: str, party: str) -> "PartyCredentials":
        """The files :func:`write_certificates` wrote for ``party`` into ``cert_dir``."""
        _check_party(party)
        return cls(ca=os.path.join(cert_dir, "ca.pem"),
                   cert=os.path.join(cert_dir, f"{party}.pem"),
                   key=os.path.join(cert_dir, f"{party}.key"))

    def read(self) -> Tuple[bytes, bytes, bytes]:
        """``(ca_pem, cert_pem, key_pem)`` as bytes, the form gRPC's credentials take.

        Raises:
            FileNotFoundError: a file is missing; the message names it and how to create it.
        """
        out = []
        for what, path in (("CA certificate", self.ca), ("certificate", self.cert),
                           ("private key", self.key)):
            try:
                with open(path, "rb") as fh:
                    out.append(fh.read())
            except FileNotFoundError:
                cert_dir = os.path.dirname(os.path.abspath(path))
                raise FileNotFoundError(f"{path}: {what} not found; {_hint(cert_dir)}") from None
        return out[0], out[1], out[2]


def _check_party(party: str) -> None:
    if not isinstance(party, str) or not _PARTY_RE.match(party):
        raise ValueError(f"party {party!r}: expected a lower-case DNS label "
                         f"(letters, digits, '-'), e.g. 'media'")
    if party == "ca":
        raise ValueError("party 'ca': reserved for the certificate authority's files")


def _san_entries(hosts: Sequence[str], party: str) -> List[x509.GeneralName]:
    entries: List[x509.GeneralName] = []
    seen = set()
    for host in list(hosts) + [party]:
        if host in seen:
            continue
        seen.add(host)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _check_hosts(hosts: Sequence[str]) -> None:
    if isinstance(hosts, str) or not hosts:
        raise ValueError(f"hosts: expected a non-empty sequence of host names or IP addresses, "
                         f"got {hosts!r}")
    for host in hosts:
        if not isinstance(host, str):
            raise ValueError(f"host {host!r}: expected a string")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _DNS_RE.match(host):
                raise ValueError(f"host {host!r}: neither an IP address nor a DNS name") from None


def _atomic_write_bytes(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file (created 0600) and ``os.replace``;
    the file gets ``mode`` before it appears under its name."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _public_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o644 & ~mask


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: gRPC's credentials take no passphrase; mode 0600 guards the file.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime,
                    days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))


def _party_certificate(party: str, hosts: Sequence[str], key: ec.EllipticCurvePrivateKey,
                       ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                       now: dt.datetime, days: int) -> x509.Certificate:
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
            .issuer_name(ca_cert.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(_san_entries(hosts, party)),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def write_certificates(out: str, parties: Sequence[str] = DEFAULT_PARTIES,
                       hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 30) -> Dict[str, str]:
    """Create a fresh CA and one certificate per party in ``out`` (created if missing).

    Existing files of the same names are replaced (a new CA invalidates the old certificates, so
    every party's certificate is re-issued together).

    Args:
        out: the directory to write into.
        parties: the party names (common names, DNS names in the SAN, file stems).
        hosts: the host names and IP addresses the parties are reached at (the SAN).
        days: validity of every certificate, in days.

    Returns:
        file name -> absolute path: ``ca.pem``, ``ca.key``, then ``<party>.pem`` and
        ``<party>.key`` for each party, in that order.

    Raises:
        ValueError: a party name, host or ``days`` is invalid.
    """
    if isinstance(parties, str) or not parties:
        raise ValueError(f"parties: expected a non-empty sequence of names, got {parties!r}")
    for party in parties:
        _check_party(party)
    if len(set(parties)) != len(parties):
        raise ValueError(f"parties: names must be unique, got {list(parties)}")
    _check_hosts(hosts)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ValueError(f"days: expected an integer in [1, 3650], got {days!r}")

    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    public_mode = _public_mode()
    paths: Dict[str, str] = {}

    def put(name: str, data: bytes, mode: int) -> None:
        paths[name] = os.path.join(out, name)
        _atomic_write_bytes(paths[name], data, mode)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now, days)
    issued = []
    for party in parties:
        key = ec.generate_private_key(ec.SECP256R1())
        issued.append((party, key, _party_certificate(party, hosts, key, ca_cert, ca_key, now,
                                                      days)))
    # Keys before certificates: a reader never finds a certificate without its key.
    put("ca.key", _key_pem(ca_key), 0o600)
    put("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), public_mode)
    for party, key, cert in issued:
        put(f"{party}.key", _key_pem(key), 0o600)
        put(f"{party}.pem", cert.public_bytes(serialization.Encoding.PEM), public_mode)
    order = ["ca.pem", "ca.key"] + [f"{p}.{ext}" for p, _, _ in issued for ext in ("pem", "key")]
    return {name: paths[name] for name in order}


def _split_list(text: str) -> List[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m federated.certs``."""
    parser = argparse.ArgumentParser(prog="python -m federated.certs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for the PEM files")
    parser.add_argument("--parties", default=",".join(DEFAULT_PARTIES),
                        help="comma-separated party names (default: %(default)s)")
    parser.add_argument("--hosts", default=",".join(DEFAULT_HOSTS),
                        help="comma-separated host names / IP addresses (default: %(default)s)")
    parser.add_argument("--days", type=int, default=30, help="validity in days (default: 30)")
    args = parser.parse_args(argv)
    parties, hosts = _split_list(args.parties), _split_list(args.hosts)
    try:
        paths = write_certificates(args.out, parties, hosts, args.days)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows: List[Tuple[str, object]] = [("output", os.path.dirname(paths["ca.pem"])),
                                      ("valid for (days)", args.days),
                                      ("hosts (SAN)", ", ".join(hosts))]
    for name, path in paths.items():
        stem, ext = os.path.splitext(name)
        cn = CA_COMMON_NAME if stem == "ca" else stem
        what = f"certificate (CN={cn})" if ext == ".pem" else "private key"
        rows.append((name, f"{what}, mode {os.stat(path).st_mode & 0o777:04o}"))
    print_table("federated.certs", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
