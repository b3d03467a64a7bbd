"""The predictions a replay bidder bids with, per split: a run's SavedModel (optionally
through a calibrator artifact), the served Triton ensemble, or the oracle (the simulator's
true probabilities)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from preprocessing import columns as C

#: The columns of a processed split that the replay reads besides any calibrator's fields.
DAY_COLUMNS = (C.CLICK, C.P_CLICK, C.P_PURCHASE_GIVEN_CLICK, C.APP_ID)
ORACLE = "oracle"
UNCALIBRATED = "none"
RUN_PLACEHOLDER = "{run}"


@dataclass
class Bidder:
    """One bidder: who it is and its (pCTR, pCVR) on every split it is replayed on.

    ``group`` names what the replay aggregates over seeds (``esmm+adacalib``, ``oracle``)."""

    name: str
    model: str
    calibrator: str
    seed: Optional[int]
    source: str
    predictions: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """``model`` or ``model+calibrator``."""
        return self.model if self.calibrator == UNCALIBRATED else f"{self.model}+{self.calibrator}"


def read_day(data_dir: str, split: str, extra_columns: Sequence[str] = (),
             max_rows: Optional[int] = None) -> pd.DataFrame:
    """The replay's columns of a processed split, in file order (the first ``max_rows``).

    ``ValueError`` naming the directory and the missing columns when the data has no ground truth
    (the replay draws every outcome from the simulator's true probabilities)."""
    from preprocessing.processed import ProcessedData
    data = ProcessedData.open(data_dir)
    data_dir = data.root
    wanted = list(dict.fromkeys([*DAY_COLUMNS, *extra_columns]))
    missing = [c for c in wanted if c not in data.columns]
    if missing:
        raise ValueError(f"{data_dir}: the replay needs column(s) {missing}, which the data does "
                         "not have (it needs the simulator's ground truth: replay generated data "
                         "from `python -m preprocessing.generate`)")
    day = data.read(split, wanted)
    day = day.head(max_rows) if max_rows else day
    for c in (C.P_CLICK, C.P_PURCHASE_GIVEN_CLICK):
        bad = int(day[c].isna().sum())
        if bad:
            raise ValueError(f"{data_dir}/{split}: column '{c}' has {bad} of {len(day)} rows NaN")
    return day.reset_index(drop=True)


def run_identity(run_dir: str) -> Tuple[str, Optional[int]]:
    """``(model, seed)`` from a run directory's ``config.json``."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path) or not os.path.isdir(os.path.join(run_dir, "saved_model")):
        raise FileNotFoundError(f"{run_dir}: not a trained run directory (needs config.json and "
                                "saved_model/, as `python -m models.train` writes them)")
    config = json.load(open(path))
    return str(config["model"]), config.get("seed")


def run_predictions(run_dir: str, data_dir: str, day: pd.DataFrame,
                    split: str) -> Tuple[np.ndarray, np.ndarray]:
    """The run's SavedModel's (pCTR, pCVR) on the rows of ``day`` (the head of ``split``),
    through ``models.predict.predict_frame`` aligned on the click column."""
    from models.predict import predict_frame
    scored = predict_frame(run_dir, data_dir, split, context=day[[C.CLICK]], rows=len(day))
    return scored["pctr"].to_numpy(np.float64), scored["pcvr"].to_numpy(np.float64)


def calibrator_dir(template: str, run_dir: str) -> str:
    """The calibrator directory for ``run_dir``: ``template`` with ``{run}`` replaced by the run
    directory's name (``CAL/{run}/adacalib`` for a several-run ``calibration.calibrate`` output)."""
    path = template.replace(RUN_PLACEHOLDER, os.path.basename(os.path.normpath(run_dir)))
    if not os.path.isfile(os.path.join(path, "calibrator.json")):
        raise FileNotFoundError(f"{path}: no calibrator.json (a calibrator directory as "
                                "`python -m calibration.calibrate` writes it, e.g. CAL/adacalib)")
    return path


def run_bidders(run_dir: str, calibrator_templates: Sequence[str], data_dir: str,
                days: Dict[str, pd.DataFrame]) -> List[Bidder]:
    """The run's uncalibrated bidder and one bidder per calibrator, each with its predictions
    on every split of ``days`` (the SavedModel is evaluated once per split)."""
    from calibration.artifact import load_calibrator
    from common.provenance import portable_path
    model, seed = run_identity(run_dir)
    name = os.path.basename(os.path.normpath(run_dir))
    runs = {os.path.dirname(os.path.abspath(run_dir)): "RUNS"}
    base = Bidder(name, model, UNCALIBRATED, seed, portable_path(run_dir, "RUN", runs))
    calibrated = []
    for template in calibrator_templates:
        cal_dir = calibrator_dir(template, run_dir)
        cal = load_calibrator(cal_dir)
        calibrated.append((cal, Bidder(f"{name}+{cal.method}", model, cal.method, seed,
                                       portable_path(cal_dir, "CAL", runs))))
    for split, day in days.items():
        pctr, pcvr = run_predictions(run_dir, data_dir, day, split)
        base.predictions[split] = (pctr, pcvr)
        for cal, bidder in calibrated:
            fields = {f: day[f].to_numpy() for f in cal.fields}
            bidder.predictions[split] = (pctr, np.asarray(cal.transform(pcvr, fields), np.float64))
    return [base] + [b for _, b in calibrated]


def oracle_bidder(days: Dict[str, pd.DataFrame]) -> Bidder:
    """The bidder that knows the true probabilities: the upper bound."""
    bidder = Bidder(ORACLE, ORACLE, UNCALIBRATED, None, "the simulator's true probabilities")
    for split, day in days.items():
        bidder.predictions[split] = (day[C.P_CLICK].to_numpy(np.float64),
                                     day[C.P_PURCHASE_GIVEN_CLICK].to_numpy(np.float64))
    return bidder


def raw_split_rows(data_dir: str, split: str, rows: int) -> pd.DataFrame:
    """The first ``rows`` raw (pre-workflow) rows of ``split``: the generated day files that
    ``preprocessing.run`` read, as its manifest names them."""
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    files = [os.path.join(manifest["input"], f) for f in manifest["files"][split]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{data_dir}: the raw files of '{split}' are gone: {missing}")
    parts, have = [], 0
    for f in files:
        if have >= rows:
            break
        part = pd.read_parquet(f)
        parts.append(part.head(rows - have))
        have += len(parts[-1])
    return pd.concat(parts, ignore_index=True)


def served_bidder(url: str, data_dir: str, days: Dict[str, pd.DataFrame],
                  protocol: str = "http", progress: bool = True) -> Bidder:
    """The bidder whose predictions come from the served ensemble (preprocessing workflow ->
    model -> calibrator), queried with the raw rows of each split."""
    from serving.client import EnsembleClient
    client = EnsembleClient(url, protocol)
    bidder = Bidder("served", "served", UNCALIBRATED, None, url)
    try:
        for split, day in days.items():
            raw = raw_split_rows(data_dir, split, len(day))
            if len(raw) != len(day) or not np.array_equal(raw[C.CLICK].to_numpy(),
                                                          day[C.CLICK].to_numpy()):
                raise RuntimeError(f"{data_dir}: the raw and processed '{split}' rows are not "
                                   "aligned (were funnel violations dropped?)")
            out = client.predict(raw, batch_size=client.max_batch_size or 256,
                                 progress=progress)
            bidder.predictions[split] = (out["pctr"].to_numpy(np.float64),
                                         out["pcvr"].to_numpy(np.float64))
    finally:
        client.close()
    return bidder
