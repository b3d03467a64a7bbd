"""extcvr preprocessing package (see README: Status)."""

from common.quiet import silence_known_warnings

silence_known_warnings()  # every command starts without the known library noise
