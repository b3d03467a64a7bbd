"""Commands that moved keep their old name for one release as thin aliases: each says on
stderr where the command went, then runs it."""

from __future__ import annotations

import sys


def say_moved(old: str, new: str) -> None:
    """Tell the user (on stderr, so the command's own output stays clean) that ``python -m old``
    is now ``python -m new`` and that the alias goes away in the next release."""
    print(f"note: `python -m {old}` moved to `python -m {new}`; this alias runs it and will be "
          "removed in the next release", file=sys.stderr)
