"""Split a processed dataset into the media party's and the advertiser's own files.

Usage::

    python -m federated.split --data PROC_DIR --out PARTIES_DIR [--overlap 0.98] [--seed 0]

Writes ``PARTIES_DIR/media`` and ``PARTIES_DIR/advertiser`` (``federated.parties.split_parties``:
each party's columns only, in its own row order, each missing a different share of the
impressions) and ends with a table of the rows per party and split.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from common.tables import print_table


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m federated.split``."""
    from federated.parties import split_parties
    parser = argparse.ArgumentParser(prog="python -m federated.split",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a preprocessing.run output")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overlap", type=float, default=0.98,
                        help="share of the impressions each party keeps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        summary = split_parties(args.data, args.out, seed=args.seed, overlap=args.overlap)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for split, shared in summary["intersection"].items():
        rows.append((f"{split}: media / advertiser / shared",
                     f"{summary['rows']['media'][split]:,} / "
                     f"{summary['rows']['advertiser'][split]:,} / {shared:,}"))
    rows.append(("out", args.out))
    print_table("federated.split", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
