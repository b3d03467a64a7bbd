"""Query the ``extcvr`` ensemble with raw request rows from a Parquet or CSV file.

Usage::

    python -m serving.client --url 127.0.0.1:8000 --input FILE.parquet|csv
        [--protocol http|grpc] [--batch-size 256] [--rows N] [--out FILE] [--show 5]
        [--model extcvr]

Rows carry the raw request features (any other column, e.g. labels, is ignored). A multi-hot
column is a Parquet list column, or in CSV a space/comma-separated string (``"3 17 42"``).
Requests are sent ``--batch-size`` rows at a time with a progress bar; the calibrated ``pctr``,
``pcvr`` and ``pctcvr`` are printed for the first ``--show`` rows and, with ``--out``, written
(Parquet or CSV by extension) in input order.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from common.tables import print_table

OUTPUTS = ("pctr", "pcvr", "pctcvr")


class EnsembleClient:
    """A ``tritonclient`` HTTP or gRPC client of the ensemble, with its input signature read
    from the server's model config. An input the config marks ``optional`` (the federated
    ensemble's ``media_embedding``) is sent only when the rows hold that column."""

    def __init__(self, url: str, protocol: str = "http", model: str = "extcvr",
                 timeout: float = 60.0):
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc'; got {protocol!r}")
        self.protocol, self.model = protocol, model
        if protocol == "http":
            import tritonclient.http as tc
            self.client = tc.InferenceServerClient(url, connection_timeout=timeout,
                                                   network_timeout=timeout)
            config = self.client.get_model_config(model)
        else:
            import tritonclient.grpc as tc
            self.client = tc.InferenceServerClient(url)
            config = self.client.get_model_config(model, as_json=True)["config"]
        self.tc = tc
        self.inputs = {i["name"]: i["data_type"].replace("TYPE_", "") for i in config["input"]}
        self.optional = {i["name"] for i in config["input"] if i.get("optional")}
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.multihot = [n[: -len("__lengths")] for n in self.inputs if n.endswith("__lengths")]

    def close(self) -> None:
        """Close the connection (an open HTTP connection delays the server's shutdown)."""
        self.client.close()

    def tensors(self, rows: pd.DataFrame) -> Dict[str, np.ndarray]:
        """Request tensors of raw rows (see ``serving.preprocess.request_tensors``)."""
        from serving.preprocess import ListColumn
        out = {}
        for name, dtype in self.inputs.items():
            if name.endswith("__lengths") or (name in self.optional
                                               and name not in rows.columns):
                continue
            np_dtype = np.int64 if dtype == "INT64" else np.float32
            if name in self.multihot:
                lc = ListColumn.from_lists([_as_list(v) for v in rows[name].values])
                out[name] = lc.to_padded().astype(np_dtype)
                out[name + "__lengths"] = lc.lengths.reshape(-1, 1)
            else:
                out[name] = rows[name].to_numpy().astype(np_dtype).reshape(-1, 1)
        return out

    def infer_tensors(self, tensors: Dict[str, np.ndarray],
                      outputs: Sequence[str] = OUTPUTS) -> Dict[str, np.ndarray]:
        """One request; ``outputs`` as 1-D arrays (a ``[B, n > 1]`` one as it is). Raises
        ``tritonclient.utils.InferenceServerException`` on an error."""
        from tritonclient.utils import np_to_triton_dtype
        inputs = []
        for name, arr in tensors.items():
            t = self.tc.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            t.set_data_from_numpy(arr)
            inputs.append(t)
        requested = [self.tc.InferRequestedOutput(o) for o in outputs]
        result = self.client.infer(self.model, inputs, outputs=requested)
        out = {o: result.as_numpy(o) for o in outputs}
        return {o: v.reshape(-1) if v.ndim == 2 and v.shape[1] == 1 else v
                for o, v in out.items()}

    def predict(self, frame: pd.DataFrame, batch_size: int = 256,
                progress: bool = True) -> pd.DataFrame:
        """Calibrated predictions of every row of ``frame``, in order."""
        from tqdm import tqdm
        batch_size = min(batch_size, self.max_batch_size or batch_size)
        parts: Dict[str, List[np.ndarray]] = {o: [] for o in OUTPUTS}
        with tqdm(total=len(frame), unit="row", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(frame), batch_size):
                rows = frame.iloc[start:start + batch_size]
                out = self.infer_tensors(self.tensors(rows))
                for o in OUTPUTS:
                    parts[o].append(out[o])
                bar.update(len(rows))
        return pd.DataFrame({o: np.concatenate(v) if v else np.zeros(0, np.float32)
                             for o, v in parts.items()})


def _as_list(v) -> np.ndarray:
    if isinstance(v, str):
        return np.array([int(x) for x in v.replace(",", " ").split()], dtype=np.int64)
    return np.asarray(v)


def read_rows(path: str, rows: Optional[int] = None) -> pd.DataFrame:
    """Rows of a Parquet or CSV file (the first ``rows`` of them)."""
    if path.endswith(".csv"):
        return pd.read_csv(path, nrows=rows)
    frame = pd.read_parquet(path)
    return frame.head(rows) if rows else frame


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m serving.client``."""
    parser = argparse.ArgumentParser(prog="python -m serving.client",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="host:port of the HTTP or gRPC endpoint")
    parser.add_argument("--input", required=True, help="Parquet or CSV of raw request rows")
    parser.add_argument("--protocol", default="http", choices=("http", "grpc"))
    parser.add_argument("--model", default="extcvr")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rows", type=int, default=None, help="only the first N rows")
    parser.add_argument("--out", default=None, help="write predictions (.parquet or .csv)")
    parser.add_argument("--show", type=int, default=5, help="print the first N predictions")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from tritonclient.utils import InferenceServerException
    try:
        frame = read_rows(args.input, args.rows)
        client = EnsembleClient(args.url, args.protocol, args.model)
        t0 = time.perf_counter()
        preds = client.predict(frame, args.batch_size, progress=not args.no_progress)
        client.close()
        seconds = time.perf_counter() - t0
    except (OSError, ValueError, KeyError, InferenceServerException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        tmp = args.out + ".partial"
        if args.out.endswith(".csv"):
            preds.to_csv(tmp, index=False)
        else:
            preds.to_parquet(tmp, index=False)
        os.replace(tmp, args.out)
    if args.show:
        shown = frame.head(args.show).reset_index(drop=True)
        keys = [c for c in ("app_id", "item_id", "user_id") if c in shown.columns]
        print(pd.concat([shown[keys], preds.head(args.show)], axis=1).to_string(
            float_format=lambda x: f"{x:.6f}"))
    print_table("serving.client", [
        ("server", f"{args.protocol}://{args.url}"), ("model", args.model),
        ("rows", len(preds)), ("batch size", args.batch_size),
        ("rows/s", f"{len(preds) / max(seconds, 1e-9):,.0f}"),
        ("mean pctr / pcvr / pctcvr", " / ".join(f"{preds[o].mean():.5f}" for o in OUTPUTS)
         if len(preds) else "-"),
        ("output", os.path.abspath(args.out) if args.out else "-")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
