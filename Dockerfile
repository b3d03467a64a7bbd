# GPU image for extcvr: NGC Merlin TensorFlow 23.08 (TF 2.12, cuDF, NVTabular 23.08, Triton).
# UNVERIFIED: no Docker engine or GPU is available where this project is developed and tested.
# Build:  docker build -t extcvr .        Run: docker run --gpus all -it extcvr make demo USE_SYSTEM_PYTHON=1
FROM nvcr.io/nvidia/merlin/merlin-tensorflow:23.08
WORKDIR /workspace/extcvr
COPY . .
# The container already holds the stack; fail fast on a wrong TF/Keras or NVTabular version.
RUN python -c "import tensorflow as tf, nvtabular as nvt; \
assert tf.__version__.startswith('2.12'), tf.__version__; \
assert nvt.__version__.startswith('23.08'), nvt.__version__"
ENV PYTHONPATH=/workspace/extcvr
CMD ["python", "-m", "preprocessing.generate", "--help"]
