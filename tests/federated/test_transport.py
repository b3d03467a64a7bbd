"""federated.transport: the message encoding, and mutual TLS between real separate processes
(the server is ``tests/federated/echo_server.py``)."""

import os
import pickle
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from federated.certs import PartyCredentials, party_directory, write_certificates
from federated.transport import (DTYPES, CertificateRefused, PeerClient, PeerGone, ProtocolError,
                                 RemoteError, decode, encode, serve)

ECHO_SERVER = Path(__file__).resolve().parent / "echo_server.py"
SERVICE = "test.Echo"
#: Short retry windows keep the refusal tests fast; a refusal must still end in PeerGone.
SHORT_RETRY_S = 0.6


# -- encoding -------------------------------------------------------------------------------

def _wire_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


@st.composite
def _arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder(">")
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=60, deadline=None)
@given(header=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5),
                                                             st.lists(st.booleans(), max_size=3)),
                              max_size=3),
       arrays=st.dictionaries(st.text(max_size=6), _arrays(), max_size=4))
def test_encode_decode_round_trips_header_and_arrays_of_every_dtype_and_shape(header, arrays):
    got_header, got = decode(encode(header, arrays))
    assert got_header == header
    assert list(got) == list(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == np.dtype(a.dtype.name)  # native byte order
        assert got[name].shape == a.shape
        assert _wire_bytes(got[name]) == _wire_bytes(a)
        assert got[name].flags.writeable


def test_decode_round_trips_non_contiguous_and_zero_length_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    _, got = decode(encode({}, {"a": a, "empty": np.zeros((0, 3), np.int64)}))
    np.testing.assert_array_equal(got["a"], a)
    assert got["empty"].shape == (0, 3) and got["empty"].dtype == np.int64


@pytest.mark.parametrize("array", [np.array(["x"]), np.array([1 + 2j]), np.array([1], np.int16),
                                   [1, 2]])
def test_encode_rejects_unsupported_arrays_with_a_value_error(array):
    with pytest.raises(ValueError, match="array 'x'"):
        encode({}, {"x": array})


def test_encode_rejects_a_header_that_is_not_json():
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode({"x": object()})


def _valid_message() -> bytes:
    return encode({"step": 3}, {"x": np.arange(4, dtype=np.int32), "m": np.ones(2, bool)})


def _with_meta(meta: bytes) -> bytes:
    return b"XCV1" + len(meta).to_bytes(4, "little") + meta


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter than"),
    (pickle.dumps({"header": {}}), "expected b'XCV1'"),
    (b"XCV1" + (1000).to_bytes(4, "little") + b"{}", "runs past the end"),
    (_with_meta(b"\xff\xfe"), "not UTF-8 JSON"),
    (_with_meta(b"[1, 2]"), "exactly 'header' and 'arrays'"),
    (_with_meta(b'{"header": [], "arrays": []}'), "'header' is not an object"),
    (_with_meta(b'{"header": {}, "arrays": [{"name": "x", "dtype": "object", "shape": [1], '
                b'"offset": 0, "nbytes": 8}]}') + bytes(8), "dtype 'object'"),
    (_with_meta(b'{"header": {}, "arrays": [{"name": "x", "dtype": "int64", "shape": [2], '
                b'"offset": 0, "nbytes": 8}]}') + bytes(8), "does not match shape"),
    (_with_meta(b'{"header": {}, "arrays": [{"name": "x", "dtype": "int64", "shape": [2], '
                b'"offset": 0, "nbytes": 16}]}') + bytes(8), "run past the end"),
    (_with_meta(b'{"header": {}, "arrays": [{"name": "x", "dtype": "int64", "shape": [-1], '
                b'"offset": 0, "nbytes": 8}]}') + bytes(8), "shape"),
    (_with_meta(b'{"header": {}, "arrays": [{"name": "x", "dtype": "bool", "shape": [1], '
                b'"offset": 0, "nbytes": 1}]}') + b"\x07", "bool bytes"),
    (_valid_message() + b"\0", "1 bytes after the last array"),
])
def test_decode_rejects_malformed_bytes_with_a_clear_value_error(data, reason):
    with pytest.raises(ValueError, match="malformed message") as info:
        decode(data)
    assert reason in str(info.value)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=64))
def test_decode_of_random_bytes_raises_only_value_error(data):
    try:
        decode(data)
    except ValueError:
        pass


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=1), flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_truncated_messages_are_rejected_and_flipped_bits_never_crash_decode(cut, flip, bit):
    message = _valid_message()
    with pytest.raises(ValueError):
        decode(message[:len(message) - 1 - cut % len(message)])
    corrupted = bytearray(message)
    corrupted[flip % len(message)] ^= 1 << bit
    try:
        decode(bytes(corrupted))
    except ValueError:
        pass


def test_protocol_error_refuses_the_ok_code():
    with pytest.raises(ValueError, match="other than OK"):
        ProtocolError(grpc.StatusCode.OK, "fine")


# -- processes ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert_dirs(tmp_path_factory):
    """``(good, other)``: two CAs. ``good`` has media, advertiser and eve; ``other`` has media
    and advertiser certificates that the good CA did not sign."""
    root = tmp_path_factory.mktemp("certs")
    good, other = str(root / "good"), str(root / "other")
    write_certificates(good, ("media", "advertiser", "eve"))
    write_certificates(other, ("media", "advertiser"))
    return good, other


class _Servers:
    """Starts echo servers as separate processes and kills them all at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs = []

    def start(self, cert_dir: str, party: str, peer: str, port: int = 0,
              wait: bool = True):
        log = self.log_dir / f"server-{len(self.procs)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, str(ECHO_SERVER), cert_dir, party, peer,
                                     str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err)
        self.procs.append(proc)
        if not wait:
            return proc, port
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            proc.kill()
            pytest.fail(f"echo server did not start: {line!r}\n{log.read_text()[-2000:]}")
        return proc, int(line)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                stream.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A factory of echo-server processes, all killed at the end of the module."""
    s = _Servers(tmp_path_factory.mktemp("server_logs"))
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="module")
def advertiser(cert_dirs, servers):
    """The address of an echo server holding the advertiser's certificate, answering media."""
    proc, port = servers.start(cert_dirs[0], "advertiser", "media")
    return f"127.0.0.1:{port}", proc


def _client(address, cert_dir, party="media", server_name="advertiser", **kw):
    return PeerClient(address, SERVICE,
                      PartyCredentials.for_party(party_directory(cert_dir, party), party),
                      server_name, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_with_the_right_certificate_round_trips_arrays_through_another_process(
        cert_dirs, advertiser):
    arrays = {"ids": np.arange(5, dtype=np.int64), "x": np.random.rand(3, 2).astype(np.float16),
              "mask": np.array([True, False]), "empty": np.zeros(0, np.float32)}
    with _client(advertiser[0], cert_dirs[0]) as client:
        header, got = client.call("Echo", {"step": 7, "note": "hi"}, arrays)
    assert header == {"step": 7, "note": "hi"}
    assert list(got) == list(arrays)
    for name, a in arrays.items():
        np.testing.assert_array_equal(got[name], a)
        assert got[name].dtype == a.dtype
    request = len(encode({"step": 7, "note": "hi"}, arrays))
    assert client.last_sizes == (request, request)  # the echo's reply is the same message


def test_client_certificate_of_another_ca_is_refused_at_once_and_the_server_keeps_serving(
        cert_dirs, advertiser):
    started = time.monotonic()
    with _client(advertiser[0], cert_dirs[1], retry_for_s=120) as intruder:
        with pytest.raises(CertificateRefused, match="certificate not signed by the expected CA"):
            intruder.call("Echo", {})
    assert time.monotonic() - started < 10  # not retried for the 120 s window
    assert advertiser[1].poll() is None
    with _client(advertiser[0], cert_dirs[0]) as client:
        assert client.call("Echo", {"ok": True})[0] == {"ok": True}


def test_client_without_a_certificate_is_refused(cert_dirs, advertiser):
    with open(os.path.join(cert_dirs[0], "ca", "ca.pem"), "rb") as fh:
        ca = fh.read()
    channel = grpc.secure_channel(advertiser[0], grpc.ssl_channel_credentials(ca),
                                  options=[("grpc.ssl_target_name_override", "advertiser")])
    try:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/{SERVICE}/Echo")(encode({}), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()


def test_client_certificate_with_another_common_name_gets_permission_denied(
        cert_dirs, advertiser):
    with _client(advertiser[0], cert_dirs[0], party="eve") as eve:
        with pytest.raises(RemoteError) as info:
            eve.call("Echo", {})
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "'eve'" in info.value.details and "'media'" in info.value.details


def test_client_refuses_a_server_certificate_of_another_ca(cert_dirs, servers):
    proc, port = servers.start(cert_dirs[1], "advertiser", "media")
    with _client(f"127.0.0.1:{port}", cert_dirs[0], retry_for_s=120) as client:
        with pytest.raises(CertificateRefused, match="certificate not signed by the expected CA"):
            client.call("Echo", {})


def test_client_certificate_whose_san_lacks_the_party_name_gets_permission_denied(
        cert_dirs, advertiser, tmp_path):
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    ca_dir = os.path.join(cert_dirs[0], "ca")
    ca_cert = x509.load_pem_x509_certificate(open(os.path.join(ca_dir, "ca.pem"), "rb").read())
    ca_key = serialization.load_pem_private_key(
        open(os.path.join(ca_dir, "ca.key"), "rb").read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "media.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "media.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    creds = PartyCredentials.for_party(str(tmp_path), "media")
    with PeerClient(advertiser[0], SERVICE, creds, "advertiser") as client:
        with pytest.raises(RemoteError) as info:
            client.call("Echo", {})
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "subject alternative names are ['localhost']" in info.value.details


def test_client_refuses_a_server_certificate_of_another_party_of_the_same_ca(cert_dirs, servers):
    # The media certificate lists 127.0.0.1 too: only the name check tells it from advertiser.
    proc, port = servers.start(cert_dirs[0], "media", "media")
    with _client(f"127.0.0.1:{port}", cert_dirs[0], retry_for_s=SHORT_RETRY_S) as client:
        with pytest.raises(PeerGone, match="advertiser"):
            client.call("Echo", {})


def test_peer_gone_after_retry_window_when_nothing_listens(cert_dirs):
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with _client(address, cert_dirs[0], retry_for_s=SHORT_RETRY_S) as client:
        with pytest.raises(PeerGone) as info:
            client.call("Step", {})
    waited = time.monotonic() - start
    assert SHORT_RETRY_S <= waited < SHORT_RETRY_S + 5
    message = str(info.value)
    assert f"the advertiser party at {address} did not answer Step for" in message
    assert "is it running?" in message
    assert info.value.method == "Step" and info.value.address == address


def test_client_retries_until_a_late_server_comes_up(cert_dirs, servers):
    port = _free_port()
    servers.start(cert_dirs[0], "advertiser", "media", port=port, wait=False)
    with _client(f"127.0.0.1:{port}", cert_dirs[0], retry_for_s=30) as client:
        assert client.call("Echo", {"late": 1})[0] == {"late": 1}


def test_handler_protocol_error_arrives_as_remote_error_with_its_code(cert_dirs, advertiser):
    with _client(advertiser[0], cert_dirs[0]) as client:
        with pytest.raises(RemoteError) as info:
            client.call("Fail", {})
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details == "batch misaligned"


def test_handler_crash_answers_internal_with_its_text_and_the_server_stays_up(
        cert_dirs, advertiser):
    with _client(advertiser[0], cert_dirs[0]) as client:
        with pytest.raises(RemoteError) as info:
            client.call("Crash", {})
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert "RuntimeError: handler exploded" in info.value.details
        assert client.call("Echo", {"after": 1})[0] == {"after": 1}


def test_unknown_method_is_unimplemented(cert_dirs, advertiser):
    with _client(advertiser[0], cert_dirs[0]) as client:
        with pytest.raises(RemoteError) as info:
            client.call("NoSuchMethod", {})
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_server_answers_invalid_argument_to_a_request_that_does_not_decode(
        cert_dirs, advertiser):
    media_dir = party_directory(cert_dirs[0], "media")
    ca, cert, key = PartyCredentials.for_party(media_dir, "media").read()
    channel = grpc.secure_channel(
        advertiser[0], grpc.ssl_channel_credentials(ca, key, cert),
        options=[("grpc.ssl_target_name_override", "advertiser")])
    try:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/{SERVICE}/Echo")(b"not a message", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed message" in info.value.details()
    finally:
        channel.close()


def test_serve_refuses_a_port_in_use(cert_dirs):
    creds = PartyCredentials.for_party(party_directory(cert_dirs[0], "advertiser"), "advertiser")
    server, port = serve(SERVICE, {"Echo": lambda h, a: (h, a)}, "127.0.0.1:0", creds, "media")
    try:
        with pytest.raises(RuntimeError, match="could not bind"):
            serve(SERVICE, {"Echo": lambda h, a: (h, a)}, f"127.0.0.1:{port}", creds, "media")
    finally:
        server.stop(0)


def test_serve_and_client_name_the_missing_credentials_file(tmp_path):
    creds = PartyCredentials.for_party(str(tmp_path), "media")
    with pytest.raises(FileNotFoundError, match="run python -m federated.certs --out CERT_DIR"):
        serve(SERVICE, {"Echo": lambda h, a: (h, a)}, "127.0.0.1:0", creds, "advertiser")
    with pytest.raises(FileNotFoundError, match="ca.pem"):
        PeerClient("127.0.0.1:1", SERVICE, creds, "advertiser")
