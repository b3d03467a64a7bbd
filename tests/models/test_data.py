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
