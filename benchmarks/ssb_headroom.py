"""How much ranking headroom does the simulator's selection bias leave to entire-space models?

Usage::

    python -m benchmarks.ssb_headroom --data GEN_DIR

On a generated dataset (``preprocessing.generate``), fits three scikit-learn logistic
regressions on the same one-hot / log features: on clicked rows with the observed purchase
label (what a naive CVR model sees); on a random subset of impressions of the same size with
``purchase_counterfactual`` (no selection bias, same sample size); and on all impressions with
``purchase_counterfactual`` (no bias, every impression labelled). All are scored on the last
day against ``purchase_counterfactual`` (entire-space CVR AUC) and by PCOC. clicked_only vs
random_same_size isolates the selection bias; random_same_size vs ssb_free is the gain from
more labelled rows. A simulator diagnostic, not a model.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import List, Optional

import numpy as np
import pandas as pd

from common.tables import print_table

CATEGORICAL = ["user_age", "user_gender", "user_city_tier", "user_purchase_power", "category_id",
               "app_id", "slot_id", "creative_type", "hour", "media_interest_cat"]
CONTINUOUS = ["item_price", "media_watch_minutes", "media_shopping_minutes",
              "media_active_days", "media_ad_click_rate"]


def headroom(data_dir: str) -> dict:
    """ES-CVR AUC and PCOC of the clicked-only, same-size random and SSB-free fits."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    files = sorted(glob.glob(os.path.join(data_dir, "day_*.parquet")))
    if len(files) < 3:
        raise ValueError(f"{data_dir}: need at least 3 day files, found {len(files)}")
    cols = CATEGORICAL + CONTINUOUS + ["click", "purchase", "purchase_counterfactual"]
    train = pd.concat([pd.read_parquet(f, columns=cols) for f in files[:-2]])
    test = pd.read_parquet(files[-1], columns=cols)
    for df in (train, test):
        df[CONTINUOUS] = np.log1p(df[CONTINUOUS].fillna(0))
    enc = OneHotEncoder(handle_unknown="ignore").fit(train[CATEGORICAL])

    def design(df):
        return hstack([enc.transform(df[CATEGORICAL]),
                       csr_matrix(df[CONTINUOUS].to_numpy())]).tocsr()

    x_train, x_test = design(train), design(test)
    clicked = train["click"].to_numpy() == 1
    # A random subset of impressions as large as the clicked set: no selection bias, but the
    # same sample size, so that the gap to "clicked_only" is the bias alone.
    rng = np.random.default_rng(0)
    random_rows = rng.choice(len(train), size=int(clicked.sum()), replace=False)
    fits = {
        "clicked_only": LogisticRegression(max_iter=400).fit(x_train[clicked],
                                                             train["purchase"][clicked]),
        "random_same_size": LogisticRegression(max_iter=400).fit(
            x_train[random_rows], train["purchase_counterfactual"].to_numpy()[random_rows]),
        "ssb_free": LogisticRegression(max_iter=400).fit(x_train,
                                                         train["purchase_counterfactual"]),
    }
    y = test["purchase_counterfactual"].to_numpy()
    out = {"train_clicked_purchases": int(train["purchase"].sum()),
           "train_counterfactual_purchases": int(train["purchase_counterfactual"].sum())}
    for name, model in fits.items():
        p = model.predict_proba(x_test)[:, 1]
        out[f"{name}_entire_space_cvr_auc"] = float(roc_auc_score(y, p))
        out[f"{name}_pcoc"] = float(p.sum() / y.sum())
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.ssb_headroom``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssb_headroom",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="output directory of preprocessing.generate")
    args = parser.parse_args(argv)
    try:
        result = headroom(args.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("benchmarks.ssb_headroom",
                [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in result.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
