# extcvr on NGC Merlin TensorFlow 23.08: TensorFlow 2.12, NVTabular 23.08 on cuDF, Triton with
# its TensorFlow and Python backends, Python 3.10. The HugeCTR image is Dockerfile.hugectr.
#
# UNVERIFIED: never built or run; there is no Docker engine or GPU where extcvr is developed.
# Verify on a machine with Docker and an NVIDIA GPU:
#   docker build -t extcvr .     # stops in the version and import checks if the base is wrong
# then the `docker run --gpus all` lines of docs/docker.md (preprocess, train,
# serve, bench). tests/test_dockerfiles.py checks this file statically.
FROM nvcr.io/nvidia/merlin/merlin-tensorflow:23.08

WORKDIR /workspace/extcvr

# Fail fast when the base is not the stack extcvr was written for.
COPY docker/check_versions.py docker/
RUN python docker/check_versions.py tensorflow=2.12 nvtabular=23.08

# Only what the project imports and the image lacks (NVIDIA-Merlin/Merlin v23.08.00,
# docker/dockerfile.merlin and docker/dockerfile.tf, install none of these). --no-deps: nothing
# the image has is upgraded (numpy 1.22.4, pandas 1.5, TensorFlow, NVTabular stay as built).
# Versions are requirements/cpu.lock's where they fit the image's Python 3.10 and numpy 1.22.4,
# else the newest that does:
#   matplotlib 3.8.4      plots of preprocessing.summary, models.evaluate/calibrate, benchmarks
#   contourpy 1.2.1       matplotlib's; cpu.lock's 1.3.2 needs numpy >= 1.23
#   cycler 0.12.1         matplotlib's
#   fonttools 4.65.0      matplotlib's; cpu.lock's 4.68.0 needs Python >= 3.11
#   kiwisolver 1.5.1      matplotlib's
#   pillow 12.3.0         matplotlib's; cpu.lock's 13.0.0 needs Python >= 3.11
#   hypothesis 6.168.5    the property tests; cpu.lock's 6.170.17 needs Python >= 3.11
#   pytest-timeout 2.4.0  pytest.ini's --timeout
#   dp-accounting 0.6.0   federated.privacy's accountant (cpu.lock's)
#   dm-tree 0.1.8         dp-accounting's (~=0.1.8)
#   mpmath 1.3.0          dp-accounting's
#   cryptography 44.0.3   federated's certificates, PSI and TLS checks; cpu.lock's 50.0.2 needs
#                         typing-extensions >= 4.13.2 on Python 3.10, newer than TensorFlow's
#   cffi 1.17.1           cryptography 44's (>= 1.12), wheels for Python 3.10
#   pycparser 2.22        cffi's; cpu.lock's 3.12 needs Python >= 3.11
# Taken from the image: pyparsing (pydot's), pyyaml, tqdm, scikit-learn, scipy, pandas, pyarrow,
# dask, onnx, onnxruntime, tf2onnx, tritonclient, pytest, nbclient, perf_analyzer, tritonserver.
# Not added on purpose: nvidia-pytriton, serving.serve's CPU Triton (the image has its own).
RUN pip install --no-cache-dir --no-deps \
        matplotlib==3.8.4 contourpy==1.2.1 cycler==0.12.1 fonttools==4.65.0 \
        kiwisolver==1.5.1 pillow==12.3.0 hypothesis==6.168.5 pytest-timeout==2.4.0 \
        dp-accounting==0.6.0 dm-tree==0.1.8 mpmath==1.3.0 cryptography==44.0.3 cffi==1.17.1 \
        pycparser==2.22

# Everything extcvr imports from the image or was just given imports: a dependency that the
# --no-deps install missed fails the build here, not a run.
RUN python docker/check_versions.py --imports matplotlib.pyplot hypothesis pytest_timeout \
        yaml tqdm sklearn scipy pandas pyarrow dask distributed onnx onnxruntime tf2onnx \
        tritonclient.http tritonclient.grpc nbclient dp_accounting cryptography \
        cryptography.hazmat.primitives.asymmetric.ec

COPY . .

# The project first, then the image's own PYTHONPATH (its dist-packages). EXTCVR_IMAGE: train
# with models.train, serve a `serving.export --target ngc` repository (docker/entrypoint.sh).
ENV PYTHONPATH=/workspace/extcvr:${PYTHONPATH} \
    EXTCVR_IMAGE=tensorflow

# NGC's entry point (driver and compat checks, banner) runs first, then ours.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "bash", "/workspace/extcvr/docker/entrypoint.sh"]
CMD ["help"]
