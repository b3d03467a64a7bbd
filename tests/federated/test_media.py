"""``python -m federated.media`` against a real advertiser process: training to the end, and
resuming after either party is SIGKILLed mid-training with every batch applied exactly once."""

import os
import re

import pytest

from party_processes import PartyRun, expected_chain

pytestmark = pytest.mark.slow


def _assert_every_batch_applied_once(run: PartyRun) -> tuple:
    media, advertiser = run.report("media"), run.report("advertiser")
    chain = expected_chain(run.media.out, run.media.data, run.media)
    assert media["applied_batches"] == advertiser["applied_batches"] == media["total_steps"]
    assert media["chain"] == advertiser["chain"] == chain
    return media, advertiser


def test_federated_run_trains_every_batch_once_and_reports_metrics_on_the_advertiser_only(
        fed_world, tmp_path):
    parties, certs = fed_world
    run = PartyRun(parties, certs, str(tmp_path / "run"), max_steps=8)
    try:
        run.start("advertiser")
        run.start("media")
        assert run.wait("media") == 0, run.log("media")
        assert run.wait("advertiser") == 0, run.log("advertiser")
    finally:
        run.stop_all()
    media, advertiser = _assert_every_batch_applied_once(run)
    assert 0.0 < advertiser["test"]["entire_space_cvr_auc"] < 1.0
    assert "test" not in media and "auc" not in run.log("media").lower()
    assert media["train_bytes_per_sample"] > 2 * 4 * 4  # width 4 fp32, both directions
    for party in ("media", "advertiser"):
        assert os.path.exists(os.path.join(getattr(run, party).out, "saved_model",
                                           "saved_model.pb"))


@pytest.mark.parametrize("killed", ["media", "advertiser"])
def test_killed_party_resumes_both_from_the_last_common_checkpoint_with_no_batch_lost_or_twice(
        fed_world, tmp_path, killed):
    parties, certs = fed_world
    run = PartyRun(parties, certs, str(tmp_path / "run"), max_steps=30, checkpoint_every=4)
    try:
        run.start("advertiser")
        run.start("media")
        run.wait_for_step(killed, 9)
        run.kill(killed)
        run.start(killed)
        assert run.wait("media") == 0, run.log("media")
        assert run.wait("advertiser") == 0, run.log("advertiser")
    finally:
        run.stop_all()
    media, advertiser = _assert_every_batch_applied_once(run)
    # the survivor's work is counted: every batch of the run, plus those it had applied past
    # the common checkpoint and redid after the rollback (the chain above: the final lineage
    # holds each batch once)
    if killed == "media":
        assert advertiser["steps_served"] == advertiser["total_steps"] + advertiser[
            "replayed_batches"]
    else:
        assert media["steps_sent"] == media["total_steps"] + media["replayed_batches"]
    assert advertiser["sessions"] >= 1 and media["sessions"] >= 1
    resumed = [int(m) for m in re.findall(r"resuming at step (\d+)", run.log(killed))]
    assert resumed[0] == 0 and resumed[-1] >= 8  # the restart resumed, it did not start over
