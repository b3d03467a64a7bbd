"""A local certificate authority and one certificate per party, for the mutual-TLS gRPC link
between the media and the advertiser party (``federated.transport``).

Usage::

    python -m federated.certs --out CERT_DIR [--parties media,advertiser]
                              [--hosts localhost,127.0.0.1] [--days 30]

Writes one directory per holder, so that each key stays with its owner::

    CERT_DIR/ca/ca.pem, ca.key                 the CA: keep it apart (offline), give it to no party
    CERT_DIR/<party>/ca.pem, <party>.pem, <party>.key
                                               what that party, and only it, is given

A party's certificate is signed by the CA; its common name is the party's name, its subject
alternative names are the hosts (DNS names and IP addresses) plus the party's name as a DNS
name, and its extended key usage allows both TLS server and client authentication (each party
serves and calls). Keys are written with mode 0600; every file is written atomically.
:class:`PartyCredentials` refuses a directory that holds the CA's key or another party's key.
This is for local and test runs: in production each party's certificate comes from the
organisations' own PKI and only the CA certificates are exchanged.
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
from cryptography.exceptions import InvalidSignature
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


def _hint(party_dir: str, party: str) -> str:
    return (f"run python -m federated.certs --out CERT_DIR and give this party "
            f"CERT_DIR/{party}/ as {party_dir}")


CA_DIR = "ca"


class CredentialsError(ValueError):
    """A party's TLS files are unsafe or do not fit together (another party's key beside its
    own, a certificate not signed by the CA it trusts, a key that is not the certificate's)."""


def party_directory(cert_dir: str, party: str) -> str:
    """The directory :func:`write_certificates` wrote for ``party`` under ``cert_dir``."""
    _check_party(party)
    return os.path.join(cert_dir, party)


@dataclass(frozen=True)
class PartyCredentials:
    """Where one party's TLS material lives: the CA certificate both parties trust, the party's
    certificate and its private key (PEM files), all in the party's own directory."""

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
    def for_party(cls, party_dir: str, party: str) -> "PartyCredentials":
        """``party``'s files in its own directory ``party_dir`` (``CERT_DIR/<party>`` of
        :func:`write_certificates`): ``ca.pem``, ``<party>.pem``, ``<party>.key``."""
        _check_party(party)
        return cls(ca=os.path.join(party_dir, "ca.pem"),
                   cert=os.path.join(party_dir, f"{party}.pem"),
                   key=os.path.join(party_dir, f"{party}.key"))

    def check_holds_no_other_key(self) -> None:
        """Refuse a key directory that also holds the CA's key or another party's key: whoever
        can read it could be the CA or that party.

        Raises:
            CredentialsError: the message names the other keys and the layout to use.
        """
        directory = os.path.dirname(os.path.abspath(self.key))
        own = os.path.basename(self.key)
        try:
            others = sorted(n for n in os.listdir(directory) if n.endswith(".key") and n != own)
        except FileNotFoundError:
            return
        if others:
            raise CredentialsError(
                f"{directory}: holds {', '.join(others)} beside this party's {own}: a party's "
                f"directory holds only its own key, the CA certificate and its certificate "
                f"(python -m federated.certs writes CERT_DIR/ca/ apart and one CERT_DIR/<party>/ "
                f"per party; give each party its own)")

    def read(self) -> Tuple[bytes, bytes, bytes]:
        """``(ca_pem, cert_pem, key_pem)`` as bytes, the form gRPC's credentials take.

        Raises:
            FileNotFoundError: a file is missing; the message names it and how to create it.
            CredentialsError: the key's directory holds another key
                (:meth:`check_holds_no_other_key`), or the certificate is not signed by the CA
                or not the key's (:meth:`check_chain`).
        """
        self.check_holds_no_other_key()
        out = []
        for what, path in (("CA certificate", self.ca), ("certificate", self.cert),
                           ("private key", self.key)):
            try:
                with open(path, "rb") as fh:
                    out.append(fh.read())
            except FileNotFoundError:
                party_dir = os.path.dirname(os.path.abspath(path))
                party = os.path.splitext(os.path.basename(self.key))[0]
                raise FileNotFoundError(f"{path}: {what} not found; "
                                        f"{_hint(party_dir, party)}") from None
        self.check_chain(*out)
        return out[0], out[1], out[2]

    def check_chain(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        """The party's certificate is issued by a certificate it trusts (one of ``ca.pem``'s, a
        bundle where each organisation has its own CA, or an intermediate that follows it in
        its own file) and belongs to its key: a mismatch would only show as a refused TLS
        handshake at the peer.

        Raises:
            CredentialsError: naming the files.
        """
        try:
            trusted = x509.load_pem_x509_certificates(ca_pem)
            chain = x509.load_pem_x509_certificates(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as e:
            raise CredentialsError(f"{self.ca}, {self.cert}, {self.key}: not PEM certificates "
                                   f"and key ({e})") from None
        leaf = chain[0]
        for issuer in chain[1:] + trusted:
            try:
                leaf.verify_directly_issued_by(issuer)
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        else:
            raise CredentialsError(f"{self.cert}: certificate not signed by the expected CA "
                                   f"({self.ca})")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise CredentialsError(f"{self.key}: not the private key of {self.cert}")


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
    """Create a fresh CA and one certificate per party under ``out`` (created if missing): the
    CA in ``out/ca/`` and each party's key, certificate and a copy of the CA certificate in
    ``out/<party>/`` (module docstring).

    Existing files of the same names are replaced (a new CA invalidates the old certificates, so
    every party's certificate is re-issued together).

    Args:
        out: the directory to write into.
        parties: the party names (common names, DNS names in the SAN, directory and file stems).
        hosts: the host names and IP addresses the parties are reached at (the SAN).
        days: validity of every certificate, in days.

    Returns:
        relative name -> absolute path: ``ca/ca.pem``, ``ca/ca.key``, then ``<party>/ca.pem``,
        ``<party>/<party>.pem`` and ``<party>/<party>.key`` for each party, in that order.

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
    now = dt.datetime.now(dt.timezone.utc)
    public_mode = _public_mode()
    paths: Dict[str, str] = {}

    def put(name: str, data: bytes, mode: int) -> None:
        paths[name] = os.path.join(out, name)
        os.makedirs(os.path.dirname(paths[name]), mode=0o700, exist_ok=True)
        _atomic_write_bytes(paths[name], data, mode)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now, days)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    issued = []
    for party in parties:
        key = ec.generate_private_key(ec.SECP256R1())
        issued.append((party, key, _party_certificate(party, hosts, key, ca_cert, ca_key, now,
                                                      days)))
    # Keys before certificates: a reader never finds a certificate without its key.
    put(f"{CA_DIR}/ca.key", _key_pem(ca_key), 0o600)
    put(f"{CA_DIR}/ca.pem", ca_pem, public_mode)
    for party, key, cert in issued:
        put(f"{party}/{party}.key", _key_pem(key), 0o600)
        put(f"{party}/ca.pem", ca_pem, public_mode)
        put(f"{party}/{party}.pem", cert.public_bytes(serialization.Encoding.PEM), public_mode)
    order = [f"{CA_DIR}/ca.pem", f"{CA_DIR}/ca.key"] + [
        f"{p}/{name}" for p, _, _ in issued for name in ("ca.pem", f"{p}.pem", f"{p}.key")]
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
    rows: List[Tuple[str, object]] = [("output", os.path.abspath(args.out)),
                                      ("valid for (days)", args.days),
                                      ("hosts (SAN)", ", ".join(hosts))]
    for name, path in paths.items():
        stem, ext = os.path.splitext(os.path.basename(name))
        cn = CA_COMMON_NAME if stem == "ca" else stem
        what = f"certificate (CN={cn})" if ext == ".pem" else "private key"
        rows.append((name, f"{what}, mode {os.stat(path).st_mode & 0o777:04o}"))
    rows.append(("give", f"{CA_DIR}/ to no party; each party only its own directory"))
    print_table("federated.certs", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
