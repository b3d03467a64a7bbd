"""Calibration of pCVR: global calibrators, field-aware NeuCalib and AdaCalib, one interface.

Every calibrator has ``fit(pcvr, y, fields)`` (on a calibration split), ``transform(pcvr,
fields)``, ``save(cal_dir)`` and ``load(cal_dir)``; the saved artifact is the numpy-only
:mod:`calibration.artifact` format that the Triton calibrate step loads.
"""

from calibration.adacalib import AdaCalibCalibrator, AdaCalibConfig
from calibration.artifact import ArtifactCalibrator, load_calibrator
from calibration.base import Calibrator
from calibration.global_methods import (GammaCalibrator, GammaConfig,
                                               HistogramCalibrator, HistogramConfig,
                                               IsotonicCalibrator, IsotonicConfig,
                                               PlattCalibrator, PlattConfig, SIRCalibrator,
                                               SIRConfig)
from calibration.neucalib import NeuCalibCalibrator, NeuCalibConfig
from calibration.trend import TrendCalibrator, TrendConfig

#: Every method by its CLI name, in report order (global methods first).
METHODS = {
    "platt": PlattCalibrator,
    "isotonic": IsotonicCalibrator,
    "histogram": HistogramCalibrator,
    "sir": SIRCalibrator,
    "gamma": GammaCalibrator,
    "neucalib": NeuCalibCalibrator,
    "adacalib": AdaCalibCalibrator,
    # our extension: AdaCalib plus each app's drift extrapolated to the serving day; fits on
    # earlier days too (calibration.calibrate --history-split train)
    "adacalib_trend": TrendCalibrator,
}
#: Every global (not field-aware) method: AdaCalib is measured against the best of them (per
#: seed and by means) and against NeuCalib (``calibration.report.adacalib_ratios``).
BEST_GLOBAL_CANDIDATES = ("platt", "isotonic", "histogram", "sir", "gamma")


def make_calibrator(name: str, fields=(), config=None) -> Calibrator:
    """A calibrator by method name (``ValueError`` listing the names on a bad one)."""
    if name not in METHODS:
        raise ValueError(f"The 'method' parameter must be one of {list(METHODS)}. "
                         f"Got {name!r} instead.")
    return METHODS[name](config=config, fields=fields)


__all__ = ["METHODS", "BEST_GLOBAL_CANDIDATES", "make_calibrator", "Calibrator",
           "ArtifactCalibrator", "load_calibrator", "AdaCalibCalibrator", "AdaCalibConfig",
           "NeuCalibCalibrator", "NeuCalibConfig", "PlattCalibrator", "PlattConfig",
           "IsotonicCalibrator", "IsotonicConfig", "HistogramCalibrator", "HistogramConfig",
           "SIRCalibrator", "SIRConfig", "GammaCalibrator", "GammaConfig", "TrendCalibrator",
           "TrendConfig"]
