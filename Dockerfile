# syntax=docker/dockerfile:1
# rnn-serve. Runs the same start command as `make run` (rnn-serve), as a non-root user.
#   CPU (default):  docker build -t rnn-serve .
#   CUDA:           docker build -t rnn-serve:cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   The CUDA torch wheels bring the CUDA runtime and cuDNN; the host's NVIDIA container toolkit
#   brings the driver. To run on a CUDA base image instead, also pass e.g.
#   --build-arg RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ARG PYTHON_IMAGE=python:3.11-slim
ARG RUNTIME_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The CPU build of torch keeps the image small; pass another index for a CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients/python ./clients/python
# Serving needs neither torch's C++ headers and test binaries nor pip in the image: ~160 MB less
RUN pip install . \
    && rm -rf /opt/venv/lib/python3.11/site-packages/torch/include \
              /opt/venv/lib/python3.11/site-packages/torch/test \
    && pip uninstall -y -q pip setuptools wheel

FROM ${RUNTIME_IMAGE} AS runtime
# A CUDA base image has no Python 3.11 where the venv expects it: bring it (no-op otherwise).
# The distribution's python3.11 is whatever version its release carries: no pin is meaningful.
# hadolint ignore=DL3008
RUN if [ ! -x /usr/local/bin/python3.11 ]; then \
        apt-get update && apt-get install -y --no-install-recommends python3.11 \
        && rm -rf /var/lib/apt/lists/* \
        && ln -sf /usr/bin/python3.11 /usr/local/bin/python3.11 \
        && ln -sf /usr/bin/python3.11 /usr/local/bin/python; \
    fi
RUN useradd --create-home --uid 10001 rnnserve \
    && mkdir -p /data/models && chown rnnserve /data/models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RNN_SERVE_HOST=0.0.0.0 \
    RNN_SERVE_PORT=8000 \
    RNN_SERVE_GRPC_PORT=8001 \
    RNN_SERVE_MODEL_REPOSITORY=/data/models
USER 10001
WORKDIR /home/rnnserve
VOLUME ["/data/models"]
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('RNN_SERVE_PORT', '8000'), timeout=2).status != 200)"]
CMD ["rnn-serve"]
