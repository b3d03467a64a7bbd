"""Moved: ``python -m models.hugectr.onnx_adapter`` is now ``python -m serving.hugectr_onnx``
(it plugs the HugeCTR model into the serving predict step, so it lives with serving). This
alias runs it for one release."""

import sys

from common.moved import say_moved
from serving.hugectr_onnx import main

if __name__ == "__main__":
    say_moved("models.hugectr.onnx_adapter", "serving.hugectr_onnx")
    sys.exit(main())
