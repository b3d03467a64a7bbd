"""extcvr federated package (see README: Status)."""
