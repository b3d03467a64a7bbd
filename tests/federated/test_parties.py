"""federated.parties: the two parties' files split from a processed dataset, and reading them."""

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from federated.parties import (ADVERTISER, KEY, MEDIA, PARTY_FILE, SPLITS, PartyData,
                               request_keys, split_parties)
from preprocessing import columns as C
from preprocessing.splits import read_split_table


def _table(out, party, split):
    return pq.read_table(os.path.join(out, party, split, "part.parquet"))


def test_media_files_hold_only_the_key_and_media_columns(party_dirs, small_processed):
    out, _ = party_dirs
    spec = C.DatasetSpec.load(small_processed)
    for split in SPLITS:
        names = _table(out, MEDIA, split).column_names
        assert names[0] == KEY
        assert sorted(names[1:]) == sorted(spec.media_private)
        assert all(n.startswith("media_") for n in names[1:])
        assert not set(names) & (set(spec.targets) | set(spec.ground_truth) | {spec.split})


def test_advertiser_files_hold_no_media_column_but_the_labels_and_ground_truth(
        party_dirs, small_processed):
    out, _ = party_dirs
    spec = C.DatasetSpec.load(small_processed)
    for split in SPLITS:
        names = _table(out, ADVERTISER, split).column_names
        assert names[0] == KEY
        assert not [n for n in names if n.startswith("media_")]
        assert set(spec.targets) <= set(names)
        assert "purchase_counterfactual" in names
    info = json.load(open(os.path.join(out, ADVERTISER, PARTY_FILE)))
    assert not [f for f in info["features"] if f.startswith("media_")]
    assert info["targets"] == list(spec.targets)


def test_each_partys_row_counts_match_the_summary_and_its_party_file(party_dirs):
    out, summary = party_dirs
    for party in (MEDIA, ADVERTISER):
        info = json.load(open(os.path.join(out, party, PARTY_FILE)))
        assert info["party"] == party and info["key"] == KEY
        for split in SPLITS:
            n = _table(out, party, split).num_rows
            assert n == summary["rows"][party][split] == info["rows"][split]
            assert PartyData.load(os.path.join(out, party), split).num_rows == n


def test_each_party_drops_about_one_minus_overlap_of_the_rows(party_dirs, small_processed):
    out, summary = party_dirs
    for split in SPLITS:
        total = read_split_table(os.path.join(small_processed, split)).num_rows
        for party in (MEDIA, ADVERTISER):
            assert summary["rows"][party][split] == pytest.approx(0.9 * total, rel=0.03)
        assert summary["intersection"][split] == pytest.approx(0.81 * total, rel=0.03)


def test_summary_intersection_equals_the_key_intersection_of_the_files(party_dirs):
    out, summary = party_dirs
    for split in SPLITS:
        media = _table(out, MEDIA, split).column(KEY).to_pylist()
        adv = _table(out, ADVERTISER, split).column(KEY).to_pylist()
        assert len(set(media)) == len(media) and len(set(adv)) == len(adv)
        assert len(set(media) & set(adv)) == summary["intersection"][split]


def test_the_two_parties_files_are_in_different_orders(party_dirs):
    out, _ = party_dirs
    media = _table(out, MEDIA, "train").column(KEY).to_pylist()
    adv = _table(out, ADVERTISER, "train").column(KEY).to_pylist()
    common = set(media) & set(adv)
    in_media = [k for k in media if k in common]
    in_adv = [k for k in adv if k in common]
    assert in_media != in_adv
    assert media != sorted(media) and adv != sorted(adv)


def test_rows_with_the_same_key_come_from_the_same_processed_row(party_dirs, small_processed):
    out, _ = party_dirs
    split = "valid"
    source = read_split_table(os.path.join(small_processed, split))
    row_of = {k: i for i, k in enumerate(request_keys(split, source.num_rows, salt="0"))}
    for party, column in ((MEDIA, "media_watch_minutes"), (ADVERTISER, "item_id"),
                          (ADVERTISER, "purchase")):
        table = _table(out, party, split)
        rows = [row_of[k] for k in table.column(KEY).to_pylist()]
        np.testing.assert_array_equal(table.column(column).to_numpy(),
                                      source.column(column).take(rows).to_numpy())


def test_batch_gives_loader_dtypes_and_multihot_values_and_offsets(party_dirs):
    out, _ = party_dirs
    adv = PartyData.load(os.path.join(out, ADVERTISER), "train")
    kinds = {f.name: f.kind for f in adv.features}
    assert "multihot" in kinds.values() and "continuous" in kinds.values()
    rows = np.array([17, 3, adv.num_rows - 1, 0, 500, 3])
    x = adv.batch(rows)
    for name, kind in kinds.items():
        if kind == "categorical":
            assert x[name].dtype == np.int64 and x[name].shape == (len(rows),)
        elif kind == "continuous":
            assert x[name].dtype == np.float32 and x[name].shape == (len(rows),)
        else:
            values, offsets = x[f"{name}__values"], x[f"{name}__offsets"]
            assert values.dtype == np.int64 and offsets.dtype == np.int64
            assert offsets[0] == 0 and offsets[-1] == len(values) and len(offsets) == len(rows) + 1
            lists = adv.table.column(name).to_pylist()
            got = [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(rows))]
            assert got == [lists[r] for r in rows]
    np.testing.assert_array_equal(x["item_id"], adv.table.column("item_id").to_numpy()[rows])
    assert list(adv.keys[rows]) == [adv.table.column(KEY)[int(r)].as_py() for r in rows]


def test_batch_of_a_later_multihot_slice_starts_its_offsets_at_zero(party_dirs):
    out, _ = party_dirs
    adv = PartyData.load(os.path.join(out, ADVERTISER), "test")
    name = next(f.name for f in adv.features if f.kind == "multihot")
    rows = np.arange(1000, 1010)
    x = adv.batch(rows)
    assert x[f"{name}__offsets"][0] == 0
    lists = adv.table.column(name).to_pylist()[1000:1010]
    assert x[f"{name}__values"].tolist() == [v for row in lists for v in row]


def test_party_data_labels_and_columns_of_the_advertiser(party_dirs):
    out, _ = party_dirs
    adv = PartyData.load(os.path.join(out, ADVERTISER), "train")
    media = PartyData.load(os.path.join(out, MEDIA), "train")
    assert media.labels == []
    assert {"click", "purchase", "purchase_counterfactual"} <= set(adv.labels)
    cols = adv.columns(["click", "purchase"], np.array([5, 2]))
    np.testing.assert_array_equal(cols["click"], adv.table.column("click").to_numpy()[[5, 2]])
    assert all(f.name.startswith("media_") for f in media.features)


def test_load_of_a_directory_that_is_no_party_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/{PARTY_FILE}.*not a party"):
        PartyData.load(str(tmp_path), "train")


def test_load_of_a_part_file_missing_a_feature_column_names_file_column_and_rows(
        party_dirs, tmp_path):
    out, _ = party_dirs
    media = str(tmp_path / "media")
    shutil.copytree(os.path.join(out, MEDIA), media)
    path = os.path.join(media, "train", "part.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop(["media_watch_minutes"]), path)
    with pytest.raises(ValueError) as info:
        PartyData.load(media, "train")
    message = str(info.value)
    assert path in message and "media_watch_minutes" in message
    assert f"{table.num_rows} rows" in message
    PartyData.load(media, "valid")  # the other splits still load


@pytest.mark.parametrize("overlap", [0.0, -0.1, 1.01])
def test_split_parties_refuses_an_overlap_outside_zero_to_one(tmp_path, overlap):
    with pytest.raises(ValueError, match=r"overlap must be in \(0, 1\]"):
        split_parties(str(tmp_path / "nowhere"), str(tmp_path / "out"), overlap=overlap)
    assert not os.path.exists(tmp_path / "out")


def test_request_keys_are_unique_per_split_and_salt():
    a = request_keys("train", 1000, salt="0")
    assert len(set(a)) == 1000 and all(len(k) == 16 for k in a)
    assert not set(a) & set(request_keys("valid", 1000, salt="0"))
    assert not set(a) & set(request_keys("train", 1000, salt="1"))
    assert list(request_keys("train", 10, salt="0")) == list(a[:10])


def test_split_cli_writes_both_parties_and_prints_the_rows_table(small_processed, tmp_path,
                                                                 capsys):
    from federated.split import main
    assert main(["--data", small_processed, "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "media" / "party.json").exists()
    assert "federated.split" in capsys.readouterr().out
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "q")]) == 2
