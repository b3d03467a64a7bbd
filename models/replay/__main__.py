"""``python -m models.replay``: moved to ``python -m replay``; this alias runs it for one
release."""

import sys

from common.moved import say_moved
from replay.cli import main

if __name__ == "__main__":
    say_moved("models.replay", "replay")
    sys.exit(main())
