# syntax=docker/dockerfile:1
# rnn-serve, CPU image. Build:  docker build -t rnn-serve .
# Runs the same start command as `make run` (rnn-serve), as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim

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
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 rnnserve \
    && mkdir -p /data/models && chown rnnserve /data/models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RNN_SERVE_HOST=0.0.0.0 \
    RNN_SERVE_PORT=8000 \
    RNN_SERVE_MODEL_REPOSITORY=/data/models
USER rnnserve
WORKDIR /home/rnnserve
VOLUME ["/data/models"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["rnn-serve"]
