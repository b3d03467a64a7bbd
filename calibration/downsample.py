"""The harder calibration case: a processed dataset whose training split has its CVR negatives
down-sampled at media-app-dependent rates.

Usage::

    python -m calibration.downsample --data PROC_DIR --out DERIVED_DIR
        [--rates 3:0.05,4:0.1,...] [--seed 0]

A copy of ``PROC_DIR`` (same schema, workflow, valid and test splits) in which each training
row with ``click == 1`` and ``purchase == 0`` is kept with probability ``rate[app_id]``; every
other row is kept. A model trained on it (``python -m models.train --model esmm --data
DERIVED_DIR ...``) over-predicts pCVR on each app by about a factor ``1 / rate`` in odds:
strongly and differently miscalibrated per media app, which a global calibrator cannot undo.
Without ``--rates`` the apps (processed ``app_id`` codes, in increasing order) get
:data:`DEFAULT_RATES` in turn. ``DERIVED_DIR/downsample.json`` records the rates and counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.atomic import atomic_output_dir
from common.tables import print_table
from preprocessing.splits import split_parts

#: Keep rates of CVR negatives given to the apps in increasing app_id order (cycled).
DEFAULT_RATES = (0.1, 0.5, 0.2, 1.0, 0.05)


def parse_rates(text: str) -> Dict[int, float]:
    """``"3:0.1,4:0.5"`` -> ``{3: 0.1, 4: 0.5}``; every rate must be in (0, 1]."""
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            k, v = part.split(":")
            out[int(k)] = float(v)
        except ValueError:
            raise ValueError(f"--rates: '{part}' is not APP:RATE") from None
        if not 0.0 < out[int(k)] <= 1.0:
            raise ValueError(f"--rates: the rate of app {k} must be in (0, 1]; got {v}")
    return out


def downsample_split(data_dir: str, out_dir: str, rates: Optional[Dict[int, float]] = None,
                     seed: int = 0, split: str = "train") -> Dict:
    """Write the derived dataset; returns the record also written to ``downsample.json``.

    Apps of the split that ``rates`` does not name keep all their rows.
    """
    src = os.path.join(data_dir, split)
    parts = split_parts(src)
    apps = np.unique(np.concatenate([pq.read_table(p, columns=["app_id"])["app_id"]
                                     .to_numpy() for p in parts]))
    if rates is None:
        rates = {int(a): DEFAULT_RATES[i % len(DEFAULT_RATES)] for i, a in enumerate(apps)}
    rng = np.random.default_rng(seed)
    kept: Dict[str, Dict[str, int]] = {str(a): {"negatives": 0, "kept": 0} for a in apps}
    with atomic_output_dir(out_dir) as staging:
        for entry in os.listdir(data_dir):
            s, d = os.path.join(data_dir, entry), os.path.join(staging, entry)
            (shutil.copytree if os.path.isdir(s) else shutil.copy2)(s, d)
        dst = os.path.join(staging, split)
        metas, stats = [], []
        for path in parts:
            table = pq.read_table(path)
            app = table["app_id"].to_numpy()
            neg = (table["click"].to_numpy() == 1) & (table["purchase"].to_numpy() == 0)
            rate = np.array([rates.get(int(a), 1.0) for a in apps])[np.searchsorted(apps, app)]
            keep = ~neg | (rng.random(len(app)) < rate)
            for a in apps:
                m = neg & (app == a)
                kept[str(a)]["negatives"] += int(m.sum())
                kept[str(a)]["kept"] += int((m & keep).sum())
            out = table.filter(pa.array(keep))
            name = os.path.basename(path)
            collector: List = []
            pq.write_table(out, os.path.join(dst, name), metadata_collector=collector)
            collector[0].set_file_path(name)
            metas.append(collector[0])
            stats.append({"file_name": name, "num_rows": out.num_rows})
        if os.path.exists(os.path.join(dst, "_metadata")):
            pq.write_metadata(pq.read_schema(os.path.join(dst, os.path.basename(parts[0]))),
                              os.path.join(dst, "_metadata"), metadata_collector=metas)
        hugectr = os.path.join(dst, "_metadata.json")
        if os.path.exists(hugectr):
            meta = json.load(open(hugectr))
            meta["file_stats"] = stats
            with open(hugectr, "w") as fh:
                json.dump(meta, fh)
        file_list = os.path.join(dst, "_file_list.txt")
        if os.path.exists(file_list):
            with open(file_list, "w") as fh:
                fh.write(f"{len(parts)}\n" + "".join(
                    os.path.join(os.path.abspath(out_dir), split, s["file_name"]) + "\n"
                    for s in stats))
        record = {"source": os.path.abspath(data_dir), "split": split, "seed": seed,
                  "rule": "keep rows with click == 1 and purchase == 0 with probability "
                          "rate[app_id]; keep all other rows",
                  "rates": {str(k): v for k, v in sorted(rates.items())},
                  "cvr_negatives": kept,
                  "rows_out": int(sum(s["num_rows"] for s in stats))}
        with open(os.path.join(staging, "downsample.json"), "w") as fh:
            json.dump(record, fh, indent=2)
    return record


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m calibration.downsample``."""
    parser = argparse.ArgumentParser(prog="python -m calibration.downsample",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rates", default=None, help="APP:RATE,... (processed app_id codes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        rates = parse_rates(args.rates) if args.rates else None
        rec = downsample_split(args.data, args.out, rates, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [("output", os.path.abspath(args.out)), ("train rows out", f"{rec['rows_out']:,}")]
    rows += [(f"app {a} keep rate", f"{rec['rates'].get(a, 1.0)} "
              f"({c['kept']:,}/{c['negatives']:,} CVR negatives)")
             for a, c in rec["cvr_negatives"].items()]
    print_table("calibration.downsample", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
