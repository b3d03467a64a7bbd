"""The end of ``make demo``: start the server on an exported repository, query it, stop it.

Usage::

    python -m serving.demo --repo triton_repo/ --input RAW.parquet [--rows 5] [--protocol grpc]

Sends the first ``--rows`` raw rows (labels and ground truth are ignored: only the request
features travel), prints the calibrated pCTR / pCVR / pCTCVR next to a few request fields, and
shuts the server down (SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import pandas as pd

from common.tables import print_table


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m serving.demo``."""
    from serving.client import EnsembleClient, read_rows
    from serving.serve import ServerError, TritonServer
    parser = argparse.ArgumentParser(prog="python -m serving.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--protocol", default="grpc", choices=("http", "grpc"))
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    server = TritonServer(args.repo)
    t0 = time.monotonic()
    try:
        server.start(args.timeout)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ready = time.monotonic() - t0
    try:
        url = server.grpc_url if args.protocol == "grpc" else server.http_url
        client = EnsembleClient(url, args.protocol)
        rows = read_rows(args.input, args.rows)
        preds = client.predict(rows, batch_size=args.rows, progress=False)
        client.close()
    finally:
        code = server.stop()
    keys = [c for c in ("app_id", "category_id", "item_id", "user_id") if c in rows.columns]
    print(pd.concat([rows[keys].reset_index(drop=True), preds], axis=1).to_string(
        float_format=lambda x: f"{x:.6f}"))
    print_table("serving.demo", [("repository", server.repo),
                                 ("server ready after", f"{ready:.1f} s"),
                                 ("protocol", args.protocol), ("requests answered", len(preds)),
                                 ("server exit code", code)])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
