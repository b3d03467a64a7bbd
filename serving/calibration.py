"""The calibrate step's calibrator: an exported calibrator artifact, or the identity.

A calibrator directory (``CAL_DIR/calibrator.json``, written by ``python -m calibration.calibrate``)
is loaded with ``calibration.artifact.load_calibrator``, numpy only; its ``fields`` are the
processed field columns it needs (e.g. ``("app_id",)``) and ``transform(pcvr, fields)`` gives the
calibrated pCVR. Without a calibrator the step is the identity. Either way the step returns
``pctcvr = pctr * calibrated pcvr``.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple

import numpy as np

from calibration.artifact import SPEC_FILENAME
from calibration.artifact import load_calibrator as load_artifact


class IdentityCalibrator:
    """Leaves pCVR unchanged; needs no field."""

    fields: Tuple[str, ...] = ()
    method = "identity"

    def transform(self, pcvr: np.ndarray, fields: Mapping[str, np.ndarray]) -> np.ndarray:
        """``pcvr`` as float32."""
        return np.asarray(pcvr, dtype=np.float32)


def load_calibrator(cal_dir: Optional[str]):
    """The calibrator stored in ``cal_dir``, or ``IdentityCalibrator()`` for None / a directory
    without ``calibrator.json``."""
    if not cal_dir or not os.path.isfile(os.path.join(cal_dir, SPEC_FILENAME)):
        return IdentityCalibrator()
    return load_artifact(cal_dir)


def calibrate(cal, pctr: np.ndarray, pcvr: np.ndarray, fields: Mapping[str, np.ndarray]
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pctr, calibrated pcvr, pctr * calibrated pcvr)`` as float32 1-D arrays."""
    pctr = np.asarray(pctr, dtype=np.float32).reshape(-1)
    pcvr = np.asarray(cal.transform(np.asarray(pcvr).reshape(-1),
                                    {k: np.asarray(v).reshape(-1) for k, v in fields.items()}),
                      dtype=np.float32).reshape(-1)
    return pctr, pcvr, (pctr * pcvr).astype(np.float32)
