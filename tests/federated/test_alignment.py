"""federated.alignment: the PSI protocol between the media's driver and the advertiser's
handlers, in one process (the real-process version is in test_advertiser.py), and what the
advertiser refuses to a media party that asks for more than one re-blinding of its set."""

import numpy as np
import pyarrow as pa
import pytest

from federated import alignment as AL
from federated.parties import PartyData
from federated.psi import EcdhPsiKey


def _party(keys) -> PartyData:
    keys = np.asarray(keys, dtype=object)
    return PartyData("mem", "train", keys, pa.table({"k": list(range(len(keys)))}), [], [])


def _wire(advertiser: AL.AdvertiserPsi):
    """The advertiser's handlers as the media's ``call`` (what the transport does, minus TLS)."""
    def call(method, header, arrays):
        split = header.get("split")
        if method == "PsiStart":
            advertiser.start(split, header["size"])
            return {}, {}
        if method == "PsiReblind":
            return {}, {"points": advertiser.reblind(split, header["offset"], arrays["points"])}
        if method == "PsiFetch":
            points, total = advertiser.fetch(split, header["offset"], header["count"])
            return {"total": total}, {"points": points}
        if method == "PsiReturn":
            advertiser.receive(split, header["offset"], arrays["points"])
            return {}, {}
        assert method == "PsiDone"
        return {}, {}
    return call


def _align(media_keys, advertiser_keys, monkeypatch, chunk=7):
    monkeypatch.setattr(AL, "CHUNK", chunk)  # several chunks each way
    media, advertiser = _party(media_keys), _party(advertiser_keys)
    psi = AL.AdvertiserPsi({"train": advertiser})
    mine = AL.media_align(_wire(psi), media, "train")
    theirs = psi.finish("train")
    return media, advertiser, mine, theirs, psi


def test_the_protocol_finds_the_plain_set_intersection_in_one_order_on_both_sides(monkeypatch):
    rng = np.random.default_rng(3)
    pool = rng.choice(10**9, size=120, replace=False)
    media_keys = [str(k) for k in rng.choice(pool, 70, replace=False)]
    advertiser_keys = [str(k) for k in rng.choice(pool, 80, replace=False)]
    media, advertiser, mine, theirs, _ = _align(media_keys, advertiser_keys, monkeypatch)
    shared = set(media_keys) & set(advertiser_keys)
    assert len(shared) > 10
    assert set(media.keys[mine.rows]) == shared
    assert list(media.keys[mine.rows]) == list(advertiser.keys[theirs.rows])
    assert mine.digest == theirs.digest


def test_disjoint_and_empty_sets_align_to_nothing(monkeypatch):
    for m, a in ((["a", "b"], ["c"]), ([], ["c"]), (["a"], [])):
        _, _, mine, theirs, _ = _align(m, a, monkeypatch)
        assert len(mine) == len(theirs) == 0


def test_a_second_re_blinding_of_the_same_split_is_refused_in_the_same_session(monkeypatch):
    *_, psi = _align(["a", "b", "c"], ["b", "c", "d"], monkeypatch)
    with pytest.raises(AL.PsiRefused, match="a second re-blinding is refused"):
        psi.start("train", 3)
    with pytest.raises(AL.PsiRefused, match="already finished"):
        psi.reblind("train", 0, EcdhPsiKey().blind(["x"]))


def test_a_second_start_while_the_first_runs_is_refused():
    psi = AL.AdvertiserPsi({"train": _party(["a"])})
    psi.start("train", 2)
    with pytest.raises(AL.PsiRefused, match="second re-blinding"):
        psi.start("train", 2)


def test_the_advertiser_re_blinds_no_more_points_than_announced():
    psi = AL.AdvertiserPsi({"train": _party(["a"])})
    psi.start("train", 3)
    points = EcdhPsiKey().blind(["p", "q", "r", "s"])
    psi.reblind("train", 0, points[:2])
    with pytest.raises(AL.PsiRefused, match="4 points in all, more than the 3 announced"):
        psi.reblind("train", 2, points[2:])
    with pytest.raises(AL.PsiRefused, match="2 of the 3 announced"):
        psi.finish("train")


def test_a_retried_chunk_gets_the_same_answer_and_other_points_there_are_refused():
    psi = AL.AdvertiserPsi({"train": _party(["a"])})
    psi.start("train", 4)
    points = EcdhPsiKey().blind(["p", "q", "r", "s"])
    first = psi.reblind("train", 0, points[:2])
    np.testing.assert_array_equal(psi.reblind("train", 0, points[:2]), first)
    with pytest.raises(AL.PsiRefused, match="other points at offset 0"):
        psi.reblind("train", 0, points[2:])
    with pytest.raises(AL.PsiRefused, match="expected the next one at 2"):
        psi.reblind("train", 3, points[3:])


def test_requests_before_the_start_and_oversized_or_unknown_starts_are_refused():
    psi = AL.AdvertiserPsi({"train": _party(["a"])}, max_peer_rows=10)
    for call in (lambda: psi.reblind("train", 0, EcdhPsiKey().blind(["x"])),
                 lambda: psi.fetch("train", 0, 5), lambda: psi.finish("train")):
        with pytest.raises(AL.PsiRefused, match="not started"):
            call()
    with pytest.raises(AL.PsiRefused, match="above this advertiser's psi_max_peer_rows 10"):
        psi.start("train", 11)
    with pytest.raises(AL.PsiRefused, match="unknown split"):
        psi.start("valid", 1)
    with pytest.raises(AL.PsiRefused, match="integer >= 0"):
        psi.start("train", -1)


def test_each_split_session_draws_its_own_scalar():
    psi = AL.AdvertiserPsi({"train": _party(["a", "b"]), "test": _party(["a", "b"])})
    psi.start("train", 0)
    psi.start("test", 0)
    train, test = psi.fetch("train", 0, 2)[0], psi.fetch("test", 0, 2)[0]
    assert not (np.sort(train.view("S32").ravel()) == np.sort(test.view("S32").ravel())).any()


def test_returned_chunks_must_follow_on_and_stay_within_what_was_fetched():
    psi = AL.AdvertiserPsi({"train": _party(["a", "b", "c"])})
    psi.start("train", 0)
    sent, total = psi.fetch("train", 0, 10)
    assert total == 3
    back = EcdhPsiKey().reblind(sent)
    with pytest.raises(AL.PsiRefused, match="expected the next one at 0"):
        psi.receive("train", 1, back[1:])
    psi.receive("train", 0, back[:2])
    psi.receive("train", 0, back[:2])  # a retry
    with pytest.raises(AL.PsiRefused, match="other points at offset 0"):
        psi.receive("train", 0, back[1:])
    with pytest.raises(AL.PsiRefused, match="more than the 3 sent"):
        psi.receive("train", 2, np.concatenate([back[2:], back[:1]]))
    with pytest.raises(AL.PsiRefused, match=r"\(n, 32\) uint8"):
        psi.receive("train", 2, back[2:].astype(np.int64))


def test_a_failed_psi_done_keeps_the_session_open_and_its_scalar():
    psi = AL.AdvertiserPsi({"train": _party(["a"])})
    psi.start("train", 2)
    with pytest.raises(AL.PsiRefused, match="0 of the 2 announced"):
        psi.finish("train")
    psi.reblind("train", 0, EcdhPsiKey().blind(["p", "q"]))  # still the same session
