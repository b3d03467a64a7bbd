"""federated.certs: the local CA, the party certificates and the CLI."""

import ipaddress
import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federated.certs import CredentialsError, PartyCredentials, main, write_certificates

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory):
    """A certificate directory for media and advertiser, and the paths returned."""
    out = str(tmp_path_factory.mktemp("certs") / "certs")
    return out, write_certificates(out, days=7)


def _load(path):
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def test_write_certificates_writes_the_ca_apart_and_one_directory_per_party(cert_dir):
    out, paths = cert_dir
    names = ["ca/ca.pem", "ca/ca.key", "media/ca.pem", "media/media.pem", "media/media.key",
             "advertiser/ca.pem", "advertiser/advertiser.pem", "advertiser/advertiser.key"]
    assert list(paths) == names
    assert paths == {n: os.path.join(os.path.abspath(out), n) for n in names}
    assert sorted(os.listdir(out)) == ["advertiser", "ca", "media"]
    assert sorted(os.listdir(os.path.join(out, "ca"))) == ["ca.key", "ca.pem"]  # no staging


def test_party_directories_hold_no_ca_key_and_no_other_partys_key(cert_dir):
    out, paths = cert_dir
    for party in ("media", "advertiser"):
        held = sorted(os.listdir(os.path.join(out, party)))
        assert held == sorted(["ca.pem", f"{party}.pem", f"{party}.key"])
        assert open(os.path.join(out, party, "ca.pem"), "rb").read() == \
            open(paths["ca/ca.pem"], "rb").read()


def test_credentials_refuse_a_directory_that_also_holds_the_ca_key_or_another_partys(
        cert_dir, tmp_path):
    import shutil
    out, paths = cert_dir
    flat = tmp_path / "flat"
    shutil.copytree(os.path.join(out, "media"), flat)
    shutil.copy(paths["ca/ca.key"], flat / "ca.key")
    with pytest.raises(CredentialsError, match="holds ca.key beside this party's media.key"):
        PartyCredentials.for_party(str(flat), "media").read()
    os.remove(flat / "ca.key")
    shutil.copy(paths["advertiser/advertiser.key"], flat / "advertiser.key")
    with pytest.raises(CredentialsError, match="advertiser.key"):
        PartyCredentials.for_party(str(flat), "media").read()


def test_private_keys_are_mode_0600(cert_dir):
    _, paths = cert_dir
    for name, path in paths.items():
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if name.endswith(".key"):
            assert mode == 0o600, name
        else:
            assert not mode & 0o022, name


def test_party_certificate_has_cn_san_both_ekus_and_is_signed_by_the_ca(cert_dir):
    _, paths = cert_dir
    ca = _load(paths["ca/ca.pem"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for party in ("media", "advertiser"):
        cert = _load(paths[f"{party}/{party}.pem"])
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert [a.value for a in cn] == [party]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost", party]
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.verify_directly_issued_by(ca)
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert days == 7


def test_party_credentials_read_the_three_pem_files(cert_dir):
    out, paths = cert_dir
    creds = PartyCredentials.for_party(os.path.join(out, "media"), "media")
    ca, cert, key = creds.read()
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----") and cert != ca
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(AttributeError):
        creds.ca = "elsewhere"  # frozen


def test_missing_credentials_name_the_path_and_the_command_to_create_them(tmp_path):
    creds = PartyCredentials.for_party(str(tmp_path), "media")
    with pytest.raises(FileNotFoundError) as info:
        creds.read()
    assert str(tmp_path / "ca.pem") in str(info.value)
    assert f"run python -m federated.certs --out CERT_DIR and give this party CERT_DIR/media/ " \
           f"as {tmp_path}" in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"parties": ("Media",)}, "lower-case DNS label"),
    ({"parties": ("ca",)}, "reserved"),
    ({"parties": ("media", "media")}, "unique"),
    ({"parties": "media"}, "sequence of names"),
    ({"hosts": ("bad host",)}, "neither an IP address nor a DNS name"),
    ({"days": 0}, r"days: expected an integer in \[1, 3650\]"),
])
def test_write_certificates_rejects_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_certificates(str(tmp_path), **kwargs)
    assert os.listdir(tmp_path) == []


def test_cli_writes_the_files_and_prints_the_summary_table(tmp_path, capsys):
    out = str(tmp_path / "c")
    assert main(["--out", out, "--parties", "media,advertiser,eve", "--hosts", "localhost",
                 "--days", "2"]) == 0
    text = capsys.readouterr().out
    assert "federated.certs" in text.splitlines()[1]
    for name in ("ca/ca.pem", "ca/ca.key", "eve/eve.pem", "eve/eve.key"):
        assert f"| {name}" in text
    assert "private key, mode 0600" in text and "certificate (CN=eve)" in text
    assert "to no party" in text
    san = _load(os.path.join(out, "eve", "eve.pem")).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "eve"]


def test_cli_reports_an_invalid_party_name_with_exit_code_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--parties", "Bad_Name"]) == 2
    assert "error: party 'Bad_Name'" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "federated.certs", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "advertiser/advertiser.key" in proc.stdout


def test_credentials_refuse_a_certificate_of_another_ca_or_another_key(cert_dir, tmp_path):
    import shutil
    out, paths = cert_dir
    mixed = tmp_path / "mixed"
    shutil.copytree(os.path.join(out, "media"), mixed)
    other = str(tmp_path / "other")
    write_certificates(other)
    shutil.copy(os.path.join(other, "ca", "ca.pem"), mixed / "ca.pem")
    with pytest.raises(CredentialsError, match="certificate not signed by the expected CA"):
        PartyCredentials.for_party(str(mixed), "media").read()
    shutil.copy(paths["media/ca.pem"], mixed / "ca.pem")
    shutil.copy(os.path.join(other, "media", "media.key"), mixed / "media.key")
    with pytest.raises(CredentialsError, match="not the private key of"):
        PartyCredentials.for_party(str(mixed), "media").read()


def test_a_trust_bundle_with_the_partys_own_ca_and_the_peers_is_accepted(cert_dir, tmp_path):
    import shutil
    out, paths = cert_dir
    other = str(tmp_path / "other")
    write_certificates(other)
    party = tmp_path / "media"
    shutil.copytree(os.path.join(out, "media"), party)
    bundle = open(os.path.join(other, "ca", "ca.pem"), "rb").read() + \
        open(paths["ca/ca.pem"], "rb").read()  # the peer organisation's CA first
    (party / "ca.pem").write_bytes(bundle)
    PartyCredentials.for_party(str(party), "media").read()
