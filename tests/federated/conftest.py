"""Fixtures of the federated tests: the two parties' files split from the small dataset."""

import pytest


@pytest.fixture(scope="session")
def party_dirs(tmp_path_factory, small_processed):
    """``(out, summary)``: ``federated.parties.split_parties`` of ``small_processed`` (seed 0,
    overlap 0.9): ``out/media`` and ``out/advertiser``, and the split's summary. Read-only."""
    from federated.parties import split_parties
    out = str(tmp_path_factory.mktemp("parties") / "parties")
    summary = split_parties(small_processed, out, seed=0, overlap=0.9)
    return out, summary


@pytest.fixture(scope="session")
def fed_world(tmp_path_factory, party_dirs):
    """``(parties_dir, certs_dir)``: the parties' files and a CA with both parties'
    certificates (``federated.certs``), for the tests that run the parties as processes."""
    from federated.certs import write_certificates
    certs = str(tmp_path_factory.mktemp("certs") / "certs")
    write_certificates(certs)
    return party_dirs[0], certs
