"""Moved: ``python -m models.calibrate`` is now ``python -m calibration.calibrate`` (the
calibration stage is its own top-level package). This alias runs it for one release."""

import sys

from calibration.calibrate import main
from common.moved import say_moved

if __name__ == "__main__":
    say_moved("models.calibrate", "calibration.calibrate")
    sys.exit(main())
