"""extcvr models package (see README: Status)."""
