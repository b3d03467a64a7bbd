"""Triton Python-backend model of one ``extcvr`` ensemble step (preprocess, predict, calibrate;
or a step of the federated repositories, ``serving.federated_steps``).

``python -m serving.export`` copies this file into ``<repo>/<step>/1/model.py`` next to the
step's artifacts, ``serving.json`` (the step and its settings) and ``code/``: the project modules
the step imports (``serving/code_bundle.py``). Everything is found relative to this file, so the
repository can be copied to another host or mounted into an NGC ``tritonserver`` container.

``sys.path`` gets, in front: ``code/`` (always), then the directory in the environment variable
``EXTCVR_SITE_PACKAGES`` when it is set. The stub's embedded interpreter ignores ``PYTHONPATH``;
``python -m serving.serve`` sets ``EXTCVR_SITE_PACKAGES`` to its own environment's site-packages
(numpy, NVTabular, ONNX Runtime). In the NGC container the system Python has them and the variable
stays unset.

Contract (python_backend): ``initialize`` loads the step once per instance and raises
``TritonModelException`` when it cannot; ``execute`` returns exactly one response per request,
a bad request getting a ``TritonError`` response while the others are served; ``finalize``
releases nothing but says goodbye in the log. An input declared ``optional: true`` that a request
lacks is simply absent from the step's tensors.
"""

import importlib
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "serving.json")) as _fh:
    _SETTINGS = json.load(_fh)
for _path in (os.environ.get("EXTCVR_SITE_PACKAGES"), os.path.join(_HERE, "code")):
    if _path:
        if _path in sys.path:
            sys.path.remove(_path)
        sys.path.insert(0, _path)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    """One ensemble step; which one is ``serving.json["step"]``."""

    def initialize(self, args):
        """Load the step's artifacts (the workflow, SavedModel or calibrator)."""
        self.step_name = _SETTINGS["step"]
        config = json.loads(args["model_config"])
        self.outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
                        for o in config["output"]}
        self.inputs = [i["name"] for i in config["input"]]
        try:
            import serving.steps
            print(f"extcvr {self.step_name}: code from "
                  f"{os.path.dirname(os.path.abspath(serving.steps.__file__))}", flush=True)
            # a KIND_GPU instance runs on its device (the predict step's providers), KIND_CPU: None
            gpu = (int(args["model_instance_device_id"])
                   if args.get("model_instance_kind") == "GPU" else None)
            # the module that defines the step: serving.steps, or serving.federated_steps for
            # the federated repositories (serving.federated_export)
            module = importlib.import_module(_SETTINGS.get("module", "serving.steps"))
            self.step = module.STEPS[self.step_name](_HERE, gpu=gpu)
        except Exception as e:  # surfaced in the server log and model status
            raise pb_utils.TritonModelException(
                f"extcvr {self.step_name}: cannot load {_HERE}: {type(e).__name__}: {e}")

    def execute(self, requests):
        """One response per request; errors come back as ``TritonError`` responses."""
        from serving.preprocess import RequestError
        tensors, responses = [], [None] * len(requests)
        for request in requests:
            inputs = {}
            for name in self.inputs:
                t = pb_utils.get_input_tensor_by_name(request, name)
                if t is not None:
                    inputs[name] = t.as_numpy()
            tensors.append(inputs)
        try:
            results = self.step.run(tensors)
        except RequestError as e:
            results = [e] * len(requests)
        except Exception as e:  # never crash the stub: every request gets the error
            msg = f"extcvr {self.step_name}: {type(e).__name__}: {e}"
            results = [RequestError(msg)] * len(requests)
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(result)))
                continue
            out = [pb_utils.Tensor(name, np.ascontiguousarray(result[name], dtype=dtype))
                   for name, dtype in self.outputs.items()]
            responses[i] = pb_utils.InferenceResponse(output_tensors=out)
        return responses

    def finalize(self):
        print(f"extcvr {_SETTINGS.get('step')}: finalize", flush=True)
