"""Moved: ``python -m models.calibrate_worlds`` is now ``python -m calibration.worlds``. This
alias runs it for one release."""

import sys

from calibration.worlds import main
from common.moved import say_moved

if __name__ == "__main__":
    say_moved("models.calibrate_worlds", "calibration.worlds")
    sys.exit(main())
