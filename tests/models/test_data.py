"""Loading processed splits: base label rates."""

import glob
import os

import pandas as pd
import pytest

from models.data import label_rates


def test_label_rates_are_ctr_over_impressions_and_funnel_rates_over_clicks(small_processed):
    parts = sorted(glob.glob(os.path.join(small_processed, "train", "*.parquet")))
    df = pd.concat([pd.read_parquet(p, columns=["click", "cart", "purchase"]) for p in parts])
    rates = label_rates(small_processed, ("click", "cart", "purchase"))
    clicked = df[df["click"] == 1]
    assert rates["click"] == pytest.approx(df["click"].mean(), rel=1e-12)
    assert rates["cart"] == pytest.approx(clicked["cart"].mean(), rel=1e-12)
    assert rates["purchase"] == pytest.approx(clicked["purchase"].mean(), rel=1e-12)


def _loader_threads():
    import threading
    return [t for t in threading.enumerate() if t.is_alive() and "load_chunks" in t.name]


def test_a_batch_stream_left_early_stops_its_loader_thread(small_processed):
    """A consumer that stops early (max_steps, a first batch) must not leave the Merlin
    loader's chunk thread behind: it retries its full queue every microsecond and slows down
    everything else in the process."""
    from models.data import batches, features_and_targets, model_columns, split_dataset
    _, targets, schema = features_and_targets(small_processed)
    ds = split_dataset(small_processed, "train", model_columns(schema, targets))
    before = len(_loader_threads())
    for _ in batches(ds, 256, shuffle=False):
        assert len(_loader_threads()) == before + 1
        break
    assert len(_loader_threads()) == before
    stream = batches(ds, 256, shuffle=True, seed=3)
    next(stream)
    stream.close()
    assert len(_loader_threads()) == before
