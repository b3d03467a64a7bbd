"""The console's known-noise filters: every package hides the known, harmless library messages
when imported, and the commands that train quiet TensorFlow's own loggers."""

from __future__ import annotations

import os
import warnings

#: Warnings that NVTabular 23.08 emits on every CPU run and that say nothing actionable here:
#: the CPU mode is the documented default off-GPU, and hashing the id tail is configured.
KNOWN_WARNINGS = ("Initializing an NVTabular Dataset in CPU mode",
                  "Performing a hash-based transformation",
                  "PyTorch dtype mappings did not load")


def silence_known_warnings() -> None:
    """Hide :data:`KNOWN_WARNINGS` (once per dataset they would flood a command's console) and
    TensorFlow's start-up INFO lines (oneDNN, CPU instruction sets): ``TF_CPP_MIN_LOG_LEVEL=1``
    unless already set, so TensorFlow's own warnings and errors still print.

    Every package of the project calls it when imported (``preprocessing/__init__.py``,
    ``models``, ``serving``, ``benchmarks``), so every command starts quiet before merlin or
    TensorFlow is imported; other warnings are left alone."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's tracing chatter (its Python and absl loggers to ERROR), its C++ INFO
    lines and NVTabular's known CPU-mode warnings (:func:`silence_known_warnings`) on the
    console."""
    silence_known_warnings()
    import logging
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    import absl.logging
    absl.logging.set_verbosity(absl.logging.ERROR)
