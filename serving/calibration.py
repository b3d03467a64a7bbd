"""The calibrate step's calibrator: the field-adaptive calibrator artifact, or the identity.

The calibration issue provides ``models.calibration.artifact.load_calibrator(cal_dir)``, whose
result has ``fields`` (processed field columns, e.g. ``("app_id",)``) and
``transform(pcvr, fields) -> calibrated pcvr`` (numpy / JSON only, no pickle). Until that module
exists, or without ``--calibrator``, the step is the identity. Either way the step returns
``pctcvr = pctr * calibrated pcvr``.
"""

from __future__ import annotations

import importlib
import os
from typing import Mapping, Optional, Tuple

import numpy as np


class IdentityCalibrator:
    """Leaves pCVR unchanged; needs no field."""

    fields: Tuple[str, ...] = ()

    def transform(self, pcvr: np.ndarray, fields: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(pcvr, dtype=np.float32)


def calibrator_available() -> bool:
    """Whether ``models.calibration.artifact`` (the calibration issue's loader) is importable."""
    try:
        importlib.import_module("models.calibration.artifact")
        return True
    except ImportError:
        return False


def load_calibrator(cal_dir: Optional[str]):
    """The calibrator stored in ``cal_dir``, or ``IdentityCalibrator()`` for None / a directory
    without ``calibrator.json``.

    Raises:
        ImportError: ``cal_dir`` holds a calibrator but ``models.calibration.artifact`` is absent.
    """
    if not cal_dir or not os.path.isfile(os.path.join(cal_dir, "calibrator.json")):
        return IdentityCalibrator()
    artifact = importlib.import_module("models.calibration.artifact")
    return artifact.load_calibrator(cal_dir)


def calibrate(cal, pctr: np.ndarray, pcvr: np.ndarray, fields: Mapping[str, np.ndarray]
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pctr, calibrated pcvr, pctr * calibrated pcvr)`` as float32 1-D arrays."""
    pctr = np.asarray(pctr, dtype=np.float32).reshape(-1)
    pcvr = np.asarray(cal.transform(np.asarray(pcvr).reshape(-1),
                                    {k: np.asarray(v).reshape(-1) for k, v in fields.items()}),
                      dtype=np.float32).reshape(-1)
    return pctr, pcvr, (pctr * pcvr).astype(np.float32)
