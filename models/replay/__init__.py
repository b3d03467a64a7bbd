"""Moved: the bidding replay is now the top-level package :mod:`replay` (``python -m replay``);
``python -m models.replay`` stays as an alias for one release."""
