"""``python -m models.replay`` (see :mod:`models.replay.cli`)."""

import sys

from models.replay.cli import main

if __name__ == "__main__":
    sys.exit(main())
