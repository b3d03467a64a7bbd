"""extcvr serving package (see README: Status)."""

from preprocessing.report import silence_known_warnings

silence_known_warnings()  # every command starts without the known library noise
