"""Generate synthetic external-media ad logs with known ground truth.

Usage::

    python -m preprocessing.generate --rows 1000000 --seed 7 --out GEN_DIR [--config FILE]

Writes, atomically (all or nothing):
- ``day_000.parquet`` ... one file per day, each written block by block (one row group per
  block of ``rows_per_block`` rows), so peak memory is a few blocks, whatever ``--rows`` is;
- ``dataset_spec.json`` (column roles), ``generator_config.json`` (the resolved config) and
  ``manifest.json`` (rows, rates, solved intercepts, peak RSS, timing).

The generative model is documented in ``preprocessing/simulator/`` and in ``docs/simulator.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import List, Optional

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from preprocessing import columns as C
from preprocessing.columns import day_filename
from common.atomic import atomic_output_dir
from common.tables import peak_rss_mb, print_table
from preprocessing.simulator.config import GeneratorConfig, load_config
from preprocessing.simulator.sampler import ImpressionSampler


def generate(rows: int, seed: int, out: str, config: Optional[GeneratorConfig] = None,
             progress: bool = True) -> dict:
    """Generate ``rows`` impressions into ``out``; returns the manifest.

    Args:
        rows: number of impressions.
        seed: the seed; equal seeds give byte-equal data for equal configs and row counts.
        out: output directory, replaced atomically on success.
        config: generator configuration (defaults if None).
        progress: show a progress bar.
    """
    config = config or GeneratorConfig()
    t0 = time.perf_counter()
    sampler = ImpressionSampler(config, seed, rows)
    spec = C.synthetic_spec()
    counts = {"rows": 0, C.CLICK: 0, C.CART: 0, C.PURCHASE: 0, C.PURCHASE_COUNTERFACTUAL: 0}
    per_day: List[int] = [0] * config.days
    with atomic_output_dir(out) as staging:
        writer = None
        current_day = None
        bar = tqdm(total=rows, unit="rows", unit_scale=True, desc="generate",
                   disable=not progress, file=sys.stderr)
        try:
            for b in range(sampler.n_blocks):
                day = sampler.block_day(b)
                table = sampler.block(b)
                if day != current_day:
                    if writer is not None:
                        writer.close()
                    writer = pq.ParquetWriter(os.path.join(staging, day_filename(day)),
                                              table.schema, compression="snappy")
                    current_day = day
                writer.write_table(table)
                n = table.num_rows
                counts["rows"] += n
                per_day[day] += n
                for col in (C.CLICK, C.CART, C.PURCHASE, C.PURCHASE_COUNTERFACTUAL):
                    counts[col] += int(np.asarray(table.column(col)).sum())
                bar.update(n)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        spec.save(staging)
        elapsed = time.perf_counter() - t0
        manifest = {
            "rows": counts["rows"],
            "seed": seed,
            "days": {day_filename(d): n for d, n in enumerate(per_day) if n},
            "ctr": counts[C.CLICK] / max(counts["rows"], 1),
            "cart_given_click": counts[C.CART] / max(counts[C.CLICK], 1),
            "purchase_given_click": counts[C.PURCHASE] / max(counts[C.CLICK], 1),
            "counterfactual_purchase_rate": counts[C.PURCHASE_COUNTERFACTUAL] / max(
                counts["rows"], 1),
            "clicks": counts[C.CLICK],
            "purchases": counts[C.PURCHASE],
            "intercepts": asdict(sampler.intercepts),
            "seconds": elapsed,
            "rows_per_second": counts["rows"] / elapsed,
            "peak_rss_mb": peak_rss_mb(),
        }
        with open(os.path.join(staging, "generator_config.json"), "w") as fh:
            json.dump(config.to_dict(), fh, indent=2)
        with open(os.path.join(staging, "manifest.json"), "w") as fh:
            json.dump(manifest, fh, indent=2)
    return manifest


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m preprocessing.generate``."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="number of impressions")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--config", default=None, help="YAML/JSON generator config")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        manifest = generate(args.rows, args.seed, args.out, config,
                            progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("preprocessing.generate", [
        ("output", os.path.abspath(args.out)),
        ("rows", f"{manifest['rows']:,}"),
        ("files (days)", len(manifest["days"])),
        ("CTR", f"{manifest['ctr']:.4f}"),
        ("cart | click", f"{manifest['cart_given_click']:.4f}"),
        ("purchase | click", f"{manifest['purchase_given_click']:.4f}"),
        ("purchases (observed)", f"{manifest['purchases']:,}"),
        ("rows/s", f"{manifest['rows_per_second']:,.0f}"),
        ("peak RSS (MB)", f"{manifest['peak_rss_mb']:.0f}"),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
