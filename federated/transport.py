"""gRPC with mutual TLS between the two parties, carrying a JSON header and numpy arrays.

No protoc: every method is a gRPC *generic* unary-unary handler on raw bytes (``/SERVICE/METHOD``)
and the bytes are this module's own encoding (:func:`encode` / :func:`decode`): a length-prefixed
JSON header followed by the raw little-endian array bytes. Nothing is ever unpickled.

Both sides authenticate: the server requires a client certificate signed by the shared CA and
answers only the expected peer (the certificate's common name and a DNS name of its subject
alternative names, read from the verified TLS session's ``x509_common_name`` and
``x509_subject_alternative_name``); the client verifies the server's certificate against the CA
and the peer's party name (a DNS name in every party certificate, see ``federated.certs``).

A handshake refused for a certificate of another CA is not retried: the client raises
:class:`CertificateRefused` at once ("certificate not signed by the expected CA"). The server
logs the same words when a TLS handshake is not followed by any call (:class:`HandshakeWatch`:
gRPC's Python API tells a server nothing about a failed handshake, only that one began).

Errors: a handler raises :class:`ProtocolError` to answer with a chosen status code; the client
raises :class:`RemoteError` (with the code) for an error answer and :class:`PeerGone` when the peer
did not answer (UNAVAILABLE or DEADLINE_EXCEEDED) for ``retry_for_s`` seconds of retries.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
import time
from concurrent import futures
from typing import Callable, Dict, Mapping, Optional, Tuple

import grpc
import numpy as np

from federated.certs import PartyCredentials

logger = logging.getLogger(__name__)

#: The first bytes of every message, followed by the header length (uint32, little-endian).
MAGIC = b"XCV1"
_PREFIX = struct.Struct("<4sI")
#: The dtypes a message may carry, by their numpy names (always little-endian on the wire).
DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")
#: Codes on which :meth:`PeerClient.call` retries: the peer is not (yet) there or did not answer.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
#: The client's backoff between retries: first delay and cap, in seconds.
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 5.0
#: Words of gRPC's status text that mark a TLS failure (reported as UNAVAILABLE too).
_TLS_WORDS = ("ssl", "handshake", "certificate", "peer name")
#: Words of gRPC's status text and core log when a certificate does not chain to the CA.
_UNTRUSTED_WORDS = ("certificate_verify_failed", "tlsv1_alert_unknown_ca",
                    "alert unknown ca")
UNTRUSTED = "certificate not signed by the expected CA"

Arrays = Dict[str, np.ndarray]
Handler = Callable[[dict, Arrays], Tuple[dict, Mapping[str, np.ndarray]]]


class ProtocolError(Exception):
    """Raised by a handler to answer the call with ``code`` (a :class:`grpc.StatusCode`) and
    ``message``, e.g. ``ProtocolError(grpc.StatusCode.FAILED_PRECONDITION, "batch misaligned")``.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        if not isinstance(code, grpc.StatusCode) or code == grpc.StatusCode.OK:
            raise ValueError(f"ProtocolError: code must be a grpc.StatusCode other than OK, "
                             f"got {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class RemoteError(Exception):
    """The peer answered with an error status: ``code`` (a :class:`grpc.StatusCode`) and its
    ``details`` text."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class CertificateRefused(Exception):
    """The TLS handshake with the peer failed on a certificate that does not chain to the CA
    (:data:`UNTRUSTED`): deterministic, so not retried."""


class PeerGone(Exception):
    """The peer did not answer (UNAVAILABLE or DEADLINE_EXCEEDED) for the whole retry window.

    Attributes: ``peer`` (its party name), ``address``, ``method``, ``waited_s`` (seconds spent
    trying) and ``last_error`` (the last gRPC status text: a TLS failure shows up as UNAVAILABLE
    too, and the message then adds a hint about the certificates).
    """

    def __init__(self, peer: str, address: str, method: str, waited_s: float, last_error: str):
        hint = ""
        if any(word in last_error.lower() for word in _TLS_WORDS):
            hint = (f"; the TLS handshake failed: check that both parties' certificates come "
                    f"from the same CA and that the peer's certificate names {peer!r}")
        super().__init__(f"the {peer} party at {address} did not answer {method} for "
                         f"{_seconds(waited_s)} s: is it running? (last error: {last_error}"
                         f"{hint})")
        self.peer = peer
        self.address = address
        self.method = method
        self.waited_s = waited_s
        self.last_error = last_error


def _seconds(s: float) -> str:
    return f"{s:.0f}" if s >= 10 else f"{s:.1f}"


# -- message encoding -------------------------------------------------------------------------

def encode(header: dict, arrays: Optional[Mapping[str, np.ndarray]] = None) -> bytes:
    """Serialise ``header`` (a JSON-serialisable dict) and named numpy arrays into one message.

    Layout: ``MAGIC``, the JSON length (uint32 LE), the UTF-8 JSON
    ``{"header": ..., "arrays": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}``, then
    the arrays' C-order little-endian bytes back to back (``offset`` counts from the end of the
    JSON). Supported dtypes: :data:`DTYPES`; any shape, including 0-d and 0-length.

    Raises:
        ValueError: the header is not a JSON-serialisable dict, an array name is not a string, or
            an array is not a numpy array of a supported dtype.
    """
    if not isinstance(header, dict):
        raise ValueError(f"header: expected a dict, got {type(header).__name__}")
    entries, chunks, offset = [], [], 0
    for name, array in (arrays or {}).items():
        if not isinstance(name, str):
            raise ValueError(f"array name {name!r}: expected a string")
        if not isinstance(array, np.ndarray):
            raise ValueError(f"array {name!r}: expected a numpy array, got "
                             f"{type(array).__name__}")
        if array.dtype.name not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {array.dtype} is not supported "
                             f"(supported: {', '.join(DTYPES)})")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        entries.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                        "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    try:
        meta = json.dumps({"header": header, "arrays": entries},
                          separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"header is not JSON-serialisable: {e}") from None
    return b"".join([_PREFIX.pack(MAGIC, len(meta)), meta] + chunks)


def _malformed(reason: str) -> ValueError:
    return ValueError(f"malformed message: {reason}")


def decode(data: bytes) -> Tuple[dict, Arrays]:
    """Parse a message written by :func:`encode`: ``(header, {name: array})``.

    The arrays are writable copies in native byte order. Every field is checked before use.

    Raises:
        ValueError: ``data`` is not a well-formed message (truncated, wrong magic, bad JSON,
            unknown dtype, sizes or offsets that do not add up, trailing bytes, ...).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"malformed message: expected bytes, got {type(data).__name__}")
    data = memoryview(data).cast("B")
    if len(data) < _PREFIX.size:
        raise _malformed(f"{len(data)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, meta_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _malformed(f"starts with {bytes(magic)!r}, expected {MAGIC!r}")
    body_start = _PREFIX.size + meta_len
    if body_start > len(data):
        raise _malformed(f"header length {meta_len} runs past the end ({len(data)} bytes)")
    try:
        meta = json.loads(bytes(data[_PREFIX.size:body_start]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _malformed(f"header is not UTF-8 JSON: {e}") from None
    if not isinstance(meta, dict) or set(meta) != {"header", "arrays"}:
        raise _malformed("header JSON must be an object with exactly 'header' and 'arrays'")
    header, entries = meta["header"], meta["arrays"]
    if not isinstance(header, dict):
        raise _malformed("'header' is not an object")
    if not isinstance(entries, list):
        raise _malformed("'arrays' is not a list")
    body = data[body_start:]
    arrays: Arrays = {}
    expected_offset = 0
    for i, entry in enumerate(entries):
        name, array = _decode_array(i, entry, body, expected_offset)
        if name in arrays:
            raise _malformed(f"array {name!r} appears twice")
        arrays[name] = array
        expected_offset += entry["nbytes"]
    if expected_offset != len(body):
        raise _malformed(f"{len(body) - expected_offset} bytes after the last array")
    return header, arrays


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_array(i: int, entry, body: memoryview, offset: int) -> Tuple[str, np.ndarray]:
    if not isinstance(entry, dict) or set(entry) != {"name", "dtype", "shape", "offset",
                                                     "nbytes"}:
        raise _malformed(f"array entry {i} must have exactly name, dtype, shape, offset, nbytes")
    name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
    if not isinstance(name, str):
        raise _malformed(f"array entry {i}: name {name!r} is not a string")
    if dtype not in DTYPES:
        raise _malformed(f"array {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _malformed(f"array {name!r}: shape {shape!r} is not a list of integers >= 0")
    if not _is_int(entry["offset"]) or entry["offset"] != offset:
        raise _malformed(f"array {name!r}: offset {entry['offset']!r}, expected {offset}")
    wire = np.dtype(dtype).newbyteorder("<")
    count = math.prod(shape)
    nbytes = count * wire.itemsize
    if not _is_int(entry["nbytes"]) or entry["nbytes"] != nbytes:
        raise _malformed(f"array {name!r}: nbytes {entry['nbytes']!r} does not match shape "
                         f"{shape} of {dtype} ({nbytes} bytes)")
    if offset + nbytes > len(body):
        raise _malformed(f"array {name!r}: bytes {offset}..{offset + nbytes} run past the end "
                         f"of the body ({len(body)} bytes)")
    raw = np.frombuffer(body, dtype=wire, count=count, offset=offset)
    if dtype == "bool" and count and raw.view(np.uint8).max() > 1:
        raise _malformed(f"array {name!r}: bool bytes other than 0 and 1")
    return name, raw.astype(np.dtype(dtype), copy=True).reshape(shape)


# -- server -----------------------------------------------------------------------------------

def _message_options(max_message_mb: int):
    if isinstance(max_message_mb, bool) or not isinstance(max_message_mb, int) \
            or not 1 <= max_message_mb <= 2047:
        raise ValueError(f"max_message_mb: expected an integer in [1, 2047], "
                         f"got {max_message_mb!r}")
    limit = max_message_mb * 1024 * 1024
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def peer_common_name(context: grpc.ServicerContext) -> Optional[str]:
    """The common name of the verified client certificate of a call (``x509_common_name`` of
    the TLS auth context), or None without one."""
    values = (context.auth_context() or {}).get("x509_common_name") or []
    if len(values) != 1:
        return None
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def peer_dns_names(context: grpc.ServicerContext) -> Tuple[str, ...]:
    """The subject alternative names of the verified client certificate of a call."""
    values = (context.auth_context() or {}).get("x509_subject_alternative_name") or []
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                 for v in values)


class HandshakeWatch:
    """Logs :data:`UNTRUSTED` when a client's TLS handshake with this server is not followed by
    any call within ``grace_s`` seconds: the handshake was refused (gRPC reports a refused
    handshake only to the client; a server learns that a handshake began, from the credentials'
    certificate fetcher, and that calls arrive). At most one line per ``every_s`` seconds."""

    def __init__(self, ca_path: str, grace_s: float = 3.0, every_s: float = 10.0):
        self.ca_path, self.grace_s, self.every_s = ca_path, grace_s, every_s
        self.lock = threading.Lock()
        self.pending: list = []
        self.last_logged = -math.inf
        self.refusals = 0
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="handshake-watch", daemon=True).start()

    def handshake(self) -> None:
        """A TLS handshake begins (the certificate fetcher of gRPC's dynamic credentials)."""
        with self.lock:
            self.pending.append(time.monotonic())

    def call(self) -> None:
        """A call arrived over an authenticated connection."""
        with self.lock:
            self.pending.clear()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self.lock:
                stale = [t for t in self.pending if now - t >= self.grace_s]
                self.pending = [t for t in self.pending if now - t < self.grace_s]
            if not stale:
                continue
            self.refusals += len(stale)
            if now - self.last_logged >= self.every_s:
                self.last_logged = now
                logger.error("refused a TLS handshake: %s, or none (a client's handshake was "
                             "not followed by a call within %g s; this server trusts %s; "
                             "%d refused so far)", UNTRUSTED, self.grace_s, self.ca_path,
                             self.refusals)

    def stop(self) -> None:
        """End the watch's thread."""
        self._stop.set()


def _unary_handler(method: str, handler: Handler, peer_name: str,
                   watch: Optional[HandshakeWatch] = None):
    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        if watch is not None:
            watch.call()
        caller = peer_common_name(context)
        names = peer_dns_names(context)
        if caller != peer_name or peer_name not in names:
            logger.warning("%s: refused caller with certificate CN %r, SAN %s (expected %r in "
                           "both)", method, caller, list(names), peer_name)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{method}: this server answers only {peer_name!r}, "
                          f"the client certificate's CN is {caller!r} and its subject "
                          f"alternative names are {list(names)}")
        # context.abort raises; keep it out of the try blocks so it is never caught there.
        status: Optional[Tuple[grpc.StatusCode, str]] = None
        reply = b""
        try:
            header, arrays = decode(request)
        except ValueError as e:
            status = (grpc.StatusCode.INVALID_ARGUMENT, f"{method}: {e}")
        else:
            try:
                out_header, out_arrays = handler(header, arrays)
                reply = encode(out_header, out_arrays)
            except ProtocolError as e:
                status = (e.code, e.message)
            except Exception as e:  # any other handler failure answers INTERNAL
                logger.exception("%s: handler failed", method)
                status = (grpc.StatusCode.INTERNAL, f"{method} failed: {type(e).__name__}: {e}")
        if status is not None:
            context.abort(*status)
        return reply

    return grpc.unary_unary_rpc_method_handler(handle)


def serve(service: str, handlers: Mapping[str, Handler], address: str,
          credentials: PartyCredentials, peer_name: str, max_workers: int = 1,
          max_message_mb: int = 256) -> Tuple[grpc.Server, int]:
    """Start a mutual-TLS gRPC server for ``service`` and return ``(server, bound_port)``.

    Each handler takes and returns ``(header, arrays)`` (see :func:`encode`); it is served as
    ``/service/method``. The server requires a client certificate signed by the CA of
    ``credentials`` and answers only calls whose certificate's common name is ``peer_name``
    (others get PERMISSION_DENIED). A handler's :class:`ProtocolError` answers with its code;
    any other exception answers INTERNAL with its text, and the server keeps serving; a request
    that does not decode answers INVALID_ARGUMENT.

    Args:
        service: the gRPC service name, e.g. ``"extcvr.federated.Advertiser"``.
        handlers: method name -> handler.
        address: ``host:port`` to bind; port 0 picks a free port (returned).
        credentials: this party's CA, certificate and key.
        peer_name: the common name of the one party allowed to call.
        max_workers: handler threads (1: calls are served one at a time, in order).
        max_message_mb: the largest request and reply, in MiB.

    Raises:
        ValueError: an argument is invalid.
        FileNotFoundError: a credentials file is missing.
        RuntimeError: ``address`` could not be bound.
    """
    if not service or not isinstance(service, str) or "/" in service:
        raise ValueError(f"service: expected a non-empty name without '/', got {service!r}")
    if not handlers:
        raise ValueError("handlers: expected at least one method")
    for method, fn in handlers.items():
        if not isinstance(method, str) or not method or "/" in method or not callable(fn):
            raise ValueError(f"handlers: {method!r} must be a method name without '/' mapped "
                             f"to a callable")
    if not isinstance(peer_name, str) or not peer_name:
        raise ValueError(f"peer_name: expected a non-empty string, got {peer_name!r}")
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers: expected an integer >= 1, got {max_workers!r}")
    options = _message_options(max_message_mb)
    ca, cert, key = credentials.read()
    # so_reuseport off: gRPC turns it on by default on Linux, so a second server (a stale run)
    # on the same port would silently share its calls instead of failing to bind.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix=f"{service}-handler"),
                         options=options + [("grpc.so_reuseport", 0)])
    watch = HandshakeWatch(credentials.ca)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        service, {m: _unary_handler(m, fn, peer_name, watch) for m, fn in handlers.items()}),))

    def fetch_certificate():
        watch.handshake()
        return None  # keep the configuration below

    server_credentials = grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca),
        fetch_certificate, require_client_authentication=True)
    try:
        port = server.add_secure_port(address, server_credentials)
    except RuntimeError as e:
        raise RuntimeError(f"{service}: could not bind {address}: {e}") from None
    if not port:
        raise RuntimeError(f"{service}: could not bind {address} (is the port in use?)")
    server.start()
    logger.info("%s serving on port %d for peer %r", service, port, peer_name)
    return server, port


# -- client -----------------------------------------------------------------------------------

def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class PeerClient:
    """A mutual-TLS client of the peer party's :func:`serve`.

    The client presents its own certificate and verifies the server's against the CA and the
    name ``server_name`` (the peer's party name, a DNS name in its certificate's SAN). When the
    address's host is not that name, ``grpc.ssl_target_name_override`` makes TLS check
    ``server_name`` instead of the host, so another certificate of the same CA (e.g. a different
    party's) is refused even when its SAN lists the host.

    Args:
        address: the peer's ``host:port``.
        service: the peer's service name (as given to :func:`serve`).
        credentials: this party's CA, certificate and key.
        server_name: the peer's party name, checked against its certificate.
        call_timeout_s: the deadline of one attempt.
        retry_for_s: how long to keep retrying UNAVAILABLE / DEADLINE_EXCEEDED before
            :class:`PeerGone`. Methods should be idempotent: an attempt that timed out may have
            run on the peer.
        max_message_mb: the largest request and reply, in MiB.
    """

    def __init__(self, address: str, service: str, credentials: PartyCredentials,
                 server_name: str, call_timeout_s: float = 60, retry_for_s: float = 120,
                 max_message_mb: int = 256):
        if not isinstance(address, str) or not address:
            raise ValueError(f"address: expected 'host:port', got {address!r}")
        if not isinstance(service, str) or not service or "/" in service:
            raise ValueError(f"service: expected a non-empty name without '/', got {service!r}")
        if not isinstance(server_name, str) or not server_name:
            raise ValueError(f"server_name: expected a non-empty string, got {server_name!r}")
        for name, value in (("call_timeout_s", call_timeout_s), ("retry_for_s", retry_for_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        options = _message_options(max_message_mb) + [
            # The channel's own reconnect backoff follows ours, so a peer that comes up late is
            # found within one backoff step rather than after gRPC's default (up to 120 s).
            # (Not grpc.min_reconnect_backoff_ms: it is also the connect-attempt timeout, and a
            # small value aborts TLS handshakes with "Timeout occurred: FD Shutdown".)
            ("grpc.initial_reconnect_backoff_ms", int(BACKOFF_FIRST_S * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(BACKOFF_CAP_S * 1000)),
        ]
        if _host(address) != server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        ca, cert, key = credentials.read()
        channel_credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                           certificate_chain=cert)
        self.address = address
        self.service = service
        self.server_name = server_name
        self.ca_path = credentials.ca
        self.call_timeout_s = float(call_timeout_s)
        self.retry_for_s = float(retry_for_s)
        self._channel = grpc.secure_channel(address, channel_credentials, options=options)
        self._stubs: Dict[str, Callable] = {}
        #: Serialised sizes of the last call's request and reply, in bytes (what the wire
        #: carried, before gRPC's own framing and TLS).
        self.last_sizes: Tuple[int, int] = (0, 0)

    def _stub(self, method: str) -> Callable:
        if method not in self._stubs:
            self._stubs[method] = self._channel.unary_unary(f"/{self.service}/{method}")
        return self._stubs[method]

    def _wait_ready(self, seconds: float) -> None:
        # Not time.sleep: a channel makes connection progress only while something polls it
        # (a call, or a connectivity watch). A bare sleep left a reconnect stalled until the
        # next attempt, so a late peer was found only after several backoff steps.
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=seconds)
        except grpc.FutureTimeoutError:
            pass
        finally:
            ready.cancel()

    def call(self, method: str, header: Optional[dict] = None,
             arrays: Optional[Mapping[str, np.ndarray]] = None) -> Tuple[dict, Arrays]:
        """Call ``method`` with ``(header, arrays)`` and return the reply's ``(header, arrays)``.

        Retries UNAVAILABLE and DEADLINE_EXCEEDED with exponential backoff (0.2 s, doubling,
        capped at 5 s; a wait ends early when the channel connects) until ``retry_for_s`` has
        passed since the first attempt.

        Raises:
            CertificateRefused: the TLS handshake failed on a certificate of another CA (at
                once, not retried).
            PeerGone: no answer within ``retry_for_s`` (the peer is down, unreachable, or the TLS
                handshake fails otherwise: see the message's last error).
            RemoteError: the peer answered with another error status (code kept).
            ValueError: the request cannot be encoded, or the reply does not decode.
        """
        if not isinstance(method, str) or not method or "/" in method:
            raise ValueError(f"method: expected a name without '/', got {method!r}")
        request = encode(header if header is not None else {}, arrays)
        stub = self._stub(method)
        start = time.monotonic()
        delay = BACKOFF_FIRST_S
        while True:
            try:
                reply = stub(request, timeout=self.call_timeout_s)
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
                if code == grpc.StatusCode.UNAVAILABLE and "handshake" in details.lower() \
                        and any(word in details.lower() for word in _UNTRUSTED_WORDS):
                    why = (f"a certificate expired or not yet valid"
                           if any(w in details.lower() for w in ("expired", "not yet valid"))
                           else f"{UNTRUSTED} (the two parties' certificates do not chain to "
                                f"one CA; this party trusts {self.ca_path})")
                    raise CertificateRefused(
                        f"TLS handshake with the {self.server_name} party at {self.address} "
                        f"refused: {why}; gRPC: {details}") from None
                if code not in RETRYABLE:
                    raise RemoteError(code, details) from None
                waited = time.monotonic() - start
                if waited >= self.retry_for_s:
                    raise PeerGone(self.server_name, self.address, method, waited,
                                   f"{code.name}: {details}") from None
                logger.debug("%s on %s: %s, retrying in %.1f s", method, self.address,
                             code.name, delay)
                self._wait_ready(min(delay, self.retry_for_s - waited))
                delay = min(delay * 2, BACKOFF_CAP_S)
                continue
            self.last_sizes = (len(request), len(reply))
            try:
                return decode(reply)
            except ValueError as e:
                raise ValueError(f"reply to {method} from {self.address}: {e}") from None

    def close(self) -> None:
        """Close the channel (idempotent)."""
        self._channel.close()

    def __enter__(self) -> "PeerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

