"""``python -m federated.advertiser`` as a real process: who it answers (mutual TLS), and the
clear errors of a run that cannot go on (misaligned batches, a gone peer)."""

import time
from dataclasses import replace

import pytest

from party_processes import PartyRun

pytestmark = pytest.mark.slow


def test_media_with_a_certificate_of_another_ca_is_refused_and_the_advertiser_stays_up(
        fed_world, tmp_path):
    from federated.certs import write_certificates
    parties, certs = fed_world
    rogue = str(tmp_path / "rogue_certs")
    write_certificates(rogue)
    run = PartyRun(parties, certs, str(tmp_path / "run"), peer_timeout_s=300.0)
    try:
        run.start("advertiser")
        media = run.start("media", replace(run.media, certs=f"{rogue}/media"))
        started = time.monotonic()
        code = media.wait(timeout=120)
        assert time.monotonic() - started < 10 + 15  # the refusal in seconds (+ start-up)
        assert code == 2, run.log("media")
        assert "certificate not signed by the expected CA" in run.log("media")
        deadline = time.monotonic() + 10
        while "certificate not signed by the expected CA" not in run.log("advertiser"):
            assert time.monotonic() < deadline, run.log("advertiser")
            time.sleep(0.2)
        assert run.procs["advertiser"].poll() is None  # still serving
        assert "session" not in run.log("advertiser")
    finally:
        run.stop_all()


def test_a_media_party_that_asks_for_a_second_re_blinding_is_refused_over_the_wire(
        fed_world, tmp_path):
    import grpc
    from federated.advertiser import SERVICE
    from federated.certs import PartyCredentials
    from federated.psi import EcdhPsiKey
    from federated.transport import PeerClient, RemoteError
    parties, certs = fed_world
    run = PartyRun(parties, certs, str(tmp_path / "run"))
    try:
        run.start("advertiser")
        port = open(f"{run.advertiser.out}/port").read().strip()
        guesses = EcdhPsiKey().blind([f"+1555000{i:04d}" for i in range(8)])
        with PeerClient(f"127.0.0.1:{port}", SERVICE,
                        PartyCredentials.for_party(f"{certs}/media", "media"), "advertiser",
                        call_timeout_s=30, retry_for_s=60) as media:
            media.call("PsiStart", {"split": "train", "size": 4}, {})
            media.call("PsiReblind", {"split": "train", "offset": 0},
                       {"points": guesses[:4]})
            with pytest.raises(RemoteError) as more:
                media.call("PsiReblind", {"split": "train", "offset": 4},
                           {"points": guesses[4:]})
            with pytest.raises(RemoteError) as again:
                media.call("PsiStart", {"split": "train", "size": 8}, {})
        assert more.value.code == again.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "more than the 4 announced" in str(more.value)
        assert "a second re-blinding is refused" in str(again.value)
        assert run.procs["advertiser"].poll() is None  # still serving
        assert "a second re-blinding is refused" in run.log("advertiser")
    finally:
        run.stop_all()


def test_media_without_its_certificate_stops_with_an_error_naming_the_file(fed_world, tmp_path):
    import os
    import shutil
    parties, certs = fed_world
    partial = str(tmp_path / "certs_without_key")
    shutil.copytree(os.path.join(certs, "media"), partial)
    os.remove(os.path.join(partial, "media.key"))
    run = PartyRun(parties, certs, str(tmp_path / "run"), peer_timeout_s=3.0)
    code = run.start("media", replace(run.media, certs=partial)).wait(timeout=120)
    assert code == 2
    assert "media.key" in run.log("media") and "federated.certs" in run.log("media")


def test_misaligned_batches_stop_both_parties_with_a_clear_error(fed_world, tmp_path):
    parties, certs = fed_world
    run = PartyRun(parties, certs, str(tmp_path / "run"))
    try:
        run.start("advertiser")
        run.start("media", replace(run.media, split=replace(run.media.split, shuffle_seed=1)))
        assert run.wait("media") == 4, run.log("media")
        assert run.wait("advertiser") == 4, run.log("advertiser")
    finally:
        run.stop_all()
    for party in ("media", "advertiser"):
        assert "batch 0 misaligned" in run.log(party)


def test_advertiser_gives_up_with_a_clear_error_when_the_media_party_is_gone(fed_world, tmp_path):
    parties, certs = fed_world
    run = PartyRun(parties, certs, str(tmp_path / "run"), peer_timeout_s=4.0)
    started = time.monotonic()
    try:
        run.start("advertiser")
        assert run.wait("advertiser", timeout=120) == 3
    finally:
        run.stop_all()
    assert time.monotonic() - started < 100
    assert "the media party is gone" in run.log("advertiser")


def test_media_gives_up_with_a_clear_error_when_the_advertiser_is_gone(fed_world, tmp_path):
    parties, certs = fed_world
    run = PartyRun(parties, certs, str(tmp_path / "run"), peer_timeout_s=3.0)
    assert run.start("media").wait(timeout=120) == 3
    assert "did not answer" in run.log("media")
