"""Keep TensorFlow out of a command that never trains (``python -m preprocessing.run``).

merlin-core imports TensorFlow whenever it is installed, only to register TensorFlow dtype
mappings (``merlin.dtypes.mappings.tf``) and helpers (``merlin.core.compat.tensorflow``), and
both treat it as optional (``try: import tensorflow``). In a preprocessing run that import is
most of the start-up (``import nvtabular``: ~6 s with it, ~2 s without on 2 cores) and nothing
uses it. :func:`keep_tensorflow_out` puts ``None`` under ``sys.modules["tensorflow"]``, which
makes ``import tensorflow`` raise ``ImportError``, so merlin takes its no-TensorFlow path: the
processed splits are byte-identical (``tests/preprocessing/test_tensorflow_free.py``).

Only command entry points call it (``if __name__ == "__main__"``), before anything imports
merlin. A process that has already imported TensorFlow (a notebook, the test suite) is left
alone, and ``EXTCVR_IMPORT_TENSORFLOW=1`` turns it off.
"""

from __future__ import annotations

import os
import sys
import warnings

#: Set to 1 to let merlin import TensorFlow in the preprocessing commands anyway.
ENV_FLAG = "EXTCVR_IMPORT_TENSORFLOW"


def keep_tensorflow_out() -> bool:
    """Make ``import tensorflow`` fail in this process unless it has happened already or
    ``EXTCVR_IMPORT_TENSORFLOW=1``; True when it did. Also hides merlin's warning about the
    TensorFlow dtype mappings it then skips (caused on purpose)."""
    if os.environ.get(ENV_FLAG) == "1" or "tensorflow" in sys.modules:
        return False
    sys.modules["tensorflow"] = None
    warnings.filterwarnings("ignore", message="Tensorflow dtype mappings did not load")
    return True
