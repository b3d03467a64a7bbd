"""Predictions of a trained run aligned with the label columns of a split: the one place that
scores a run offline for evaluation (``models.evaluate``), calibration
(``calibration.calibrate``), the bidding replay (``replay.bidders``) and the federated
evaluation (``federated``, through :func:`aligned_frame`).

Predictions come from the run's exported SavedModel (the artifact that is served), fed by the
Merlin loader in file order; labels, ground truth and field ids are read from the same Parquet
parts, and the row alignment is checked on the click column.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from preprocessing import columns as C
from preprocessing.processed import ProcessedData

#: The columns every scored frame carries when the data has them: labels, the simulator's
#: ground truth and the field ids the metrics slice by.
CONTEXT_COLUMNS = (C.CLICK, C.PURCHASE, C.PURCHASE_COUNTERFACTUAL, C.P_CLICK,
                   C.P_PURCHASE_GIVEN_CLICK, C.USER_ID, C.APP_ID, C.CATEGORY_ID)
#: The model outputs a scored frame carries.
OUTPUTS = ("pctr", "pcvr", "pctcvr")


def predict_split(saved_model_dir: str, data, split: str,
                  batch_size: int = 16384) -> pd.DataFrame:
    """pCTR / pCVR / pCTCVR of every row of ``split``, in file order, from a SavedModel (and
    ``_click``, the click label of each row, for the alignment check)."""
    import tensorflow as tf

    from models.data import batches, model_columns, split_dataset
    from models.export import cast_to_signature

    data = ProcessedData.open(data)
    ds = split_dataset(data, split, model_columns(data.schema(split), data.targets))
    loaded = tf.saved_model.load(saved_model_dir)
    serve = loaded.signatures["serving_default"]
    specs = {k: v for k, v in serve.structured_input_signature[1].items()}
    parts: Dict[str, List[np.ndarray]] = defaultdict(list)
    for x, y in batches(ds, batch_size, shuffle=False):
        out = serve(**cast_to_signature(x, specs))
        for k in OUTPUTS:
            parts[k].append(out[k].numpy())
        parts["_click"].append(np.asarray(y[C.CLICK]).reshape(-1))
    return pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()})


def split_context(data, split: str, extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Labels, ground truth and field ids of a split (whichever of them the data has), and
    ``extra_columns`` the data has."""
    data = ProcessedData.open(data)
    have = set(data.columns)
    wanted = [c for c in dict.fromkeys([*CONTEXT_COLUMNS, *extra_columns]) if c in have]
    return data.read(split, wanted)


def aligned_frame(predictions: Mapping[str, np.ndarray], context: Mapping[str, np.ndarray],
                  where: str) -> Dict[str, np.ndarray]:
    """``context``'s columns with the predictions beside them, after checking that both cover
    the same rows (the same length, and the same click label where the predictions carry
    ``_click``); ``RuntimeError`` naming ``where`` otherwise."""
    n = len(next(iter(context.values()))) if context else 0
    if len(predictions["pcvr"]) != n or (
            "_click" in predictions and C.CLICK in context
            and not np.array_equal(np.asarray(predictions["_click"]),
                                   np.asarray(context[C.CLICK]))):
        raise RuntimeError(f"{where}: predictions and label rows are not aligned")
    frame = {c: np.asarray(v) for c, v in context.items()}
    frame.update({k: np.asarray(predictions[k]) for k in OUTPUTS if k in predictions})
    return frame


def predict_frame(run_dir: str, data, split: str, extra_columns: Sequence[str] = (),
                  context: Optional[pd.DataFrame] = None, rows: Optional[int] = None
                  ) -> pd.DataFrame:
    """The run's predictions on ``split`` beside the split's label, ground-truth and field
    columns (and ``extra_columns``), row for row.

    Args:
        run_dir: a trained run (``python -m models.train``: its ``saved_model/``).
        data: the processed dataset (handle or directory).
        split: ``train``, ``valid`` or ``test``.
        extra_columns: more columns of the split to carry (``day``, a calibration field).
        context: the split's context frame when the caller has read it already
            (:func:`split_context`), e.g. to score several runs on one read.
        rows: keep the first ``rows`` rows only (the context must then be that head too).
    """
    saved = os.path.join(run_dir, "saved_model")
    if not os.path.isdir(saved):
        raise FileNotFoundError(f"{run_dir}: no saved_model/ (not a trained run directory)")
    preds = predict_split(saved, data, split)
    if context is None:
        context = split_context(data, split, extra_columns)
    if rows is not None:
        preds, context = preds.head(rows), context.head(rows)
    frame = aligned_frame({k: preds[k].to_numpy() for k in preds.columns},
                          {c: context[c].to_numpy() for c in context.columns},
                          f"{run_dir} on {split}")
    return pd.DataFrame(frame)
