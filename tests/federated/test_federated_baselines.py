"""federated.baselines: the single-process arms (advertiser-only, centralised) on the parties'
files."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from federated.baselines import JoinedSplit, label_rates, train_arm
from federated.parties import ADVERTISER, MEDIA, PartyData
from models.config import ModelConfig, TrainConfig

TINY = ModelConfig(embedding_dim=4, tower_units=(8,))
TRAIN = TrainConfig(batch_size=1024, max_steps=5, eval_batch_size=4096)
HEADLINE = ("entire_space_cvr_auc", "ctr_auc", "cvr_auc_clicked", "ctr_logloss")


def _dirs(party_dirs):
    out, _ = party_dirs
    return os.path.join(out, MEDIA), os.path.join(out, ADVERTISER)


def test_join_aligns_the_same_keys_on_both_sides_in_key_order(party_dirs):
    media_dir, adv_dir = _dirs(party_dirs)
    summary = party_dirs[1]
    media, adv = PartyData.load(media_dir, "test"), PartyData.load(adv_dir, "test")
    joined = JoinedSplit.join(media, adv)
    assert len(joined) == summary["intersection"]["test"]
    keys = media.keys[joined.media_rows]
    assert list(keys) == list(adv.keys[joined.advertiser_rows])
    assert list(keys) == sorted(set(media.keys) & set(adv.keys))


def test_label_rates_are_ctr_over_rows_and_the_rest_over_clicks():
    labels = {"click": np.array([1, 1, 0, 0]), "purchase": np.array([1, 0, 0, 0])}
    assert label_rates(labels) == {"click": 0.5, "purchase": 0.5}


@pytest.mark.parametrize("arm", ["advertiser_only", "centralized", "centralized_flat"])
def test_train_arm_scores_the_test_split_and_exports_a_saved_model(party_dirs, tmp_path, arm):
    media_dir, adv_dir = _dirs(party_dirs)
    export_dir = str(tmp_path / "export")
    result = train_arm(arm, media_dir, adv_dir, "esmm", seed=0, shuffle_seed=0,
                       model_config=TINY, train_config=TRAIN, progress=False,
                       export_dir=export_dir)
    assert result["arm"] == arm and result["steps"] == 5
    assert result["samples_per_second"] > 0 and math.isfinite(result["final_loss"])
    assert result["test"]["n_impressions"] == party_dirs[1]["intersection"]["test"]
    for key in HEADLINE:
        assert math.isfinite(result["test"][key]), key
    if arm == "centralized":  # the split model in one process: nothing to serve from it
        assert not os.path.exists(export_dir)
        return
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    names = set(served.structured_input_signature[1])
    assert any(n.startswith("media_") for n in names) == (arm == "centralized_flat")
    assert set(served.structured_outputs) == {"pctr", "pcvr", "pctcvr"}


def test_train_arm_refuses_an_unknown_arm(party_dirs):
    media_dir, adv_dir = _dirs(party_dirs)
    with pytest.raises(ValueError, match="arm must be one of"):
        train_arm("federated", media_dir, adv_dir, "esmm", 0, 0, TINY, TRAIN, progress=False)
