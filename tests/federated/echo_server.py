"""A tiny ``federated.transport`` server for the transport tests, run as its own process::

    python tests/federated/echo_server.py CERT_DIR PARTY PEER [PORT]

It serves ``PARTY``'s certificate from ``CERT_DIR`` on 127.0.0.1 (port 0: a free one), answers
only ``PEER``, prints the bound port on one line, and serves until stdin closes (the test
process ended) or it is killed. Methods of service ``test.Echo``:

- ``Echo``: returns the request's header and arrays;
- ``Fail``: raises ``ProtocolError(FAILED_PRECONDITION, "batch misaligned")``;
- ``Crash``: raises ``RuntimeError("handler exploded")``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc  # noqa: E402

from federated.certs import PartyCredentials, party_directory  # noqa: E402
from federated.transport import ProtocolError, serve  # noqa: E402

SERVICE = "test.Echo"


def echo(header, arrays):
    """Answer with the request."""
    return header, arrays


def fail(header, arrays):
    """Answer FAILED_PRECONDITION."""
    raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION, "batch misaligned")


def crash(header, arrays):
    """Fail with an unexpected exception (INTERNAL)."""
    raise RuntimeError("handler exploded")


def main(argv):
    """Serve until stdin closes."""
    cert_dir, party, peer = argv[:3]
    port = argv[3] if len(argv) > 3 else "0"
    credentials = PartyCredentials.for_party(party_directory(cert_dir, party), party)
    server, bound = serve(SERVICE, {"Echo": echo, "Fail": fail, "Crash": crash},
                          f"127.0.0.1:{port}", credentials, peer)
    print(bound, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main(sys.argv[1:])
