"""extcvr serving package (see README: Status)."""
