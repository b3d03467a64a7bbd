"""``python -m replay`` (see :mod:`replay.cli`)."""

import sys

from replay.cli import main

if __name__ == "__main__":
    sys.exit(main())
