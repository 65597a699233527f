# syntax=docker/dockerfile:1
#
# shelfcast image: the worker (default) and the LSTM trainer (`shelfcast trainer`).
#
#   docker build -t shelfcast .
#   docker run --rm shelfcast                      # shelfcast worker (default)
#   docker run --rm shelfcast shelfcast --help     # any other subcommand
#
# Two stages: the builder owns the compilers (only needed if a dependency ever
# falls back to an sdist) and a virtual environment; the runtime stage copies
# just that environment and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------- #
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv "$VIRTUAL_ENV"

# CPU-only torch first, in its own layer: it is the big one, it changes rarely,
# and installing it from the CPU index avoids pulling the CUDA wheels. The later
# `pip install .` sees torch already satisfied and leaves it alone.
# docker-compose.gpu.yml builds with TORCH_INDEX_URL=https://pypi.org/simple for CUDA wheels.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX_URL"

# The project itself (pyproject.toml at the root; packages streamer/ and models/;
# console script `shelfcast`). .dockerignore keeps venvs, state and caches out.
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
 && shelfcast --help > /dev/null

# --------------------------------------------------------------------------- #
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="shelfcast" \
      org.opencontainers.image.description="Real-time demand forecaster (Kafka + Redis + Faust)"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/shelfcast

# LightGBM (the `lightgbm` global model) links the OpenMP runtime, which the slim image lacks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged user with a fixed uid/gid so volume ownership is predictable.
RUN groupadd --system --gid 10001 shelfcast \
 && useradd --system --uid 10001 --gid shelfcast --create-home --home-dir /home/shelfcast \
            --shell /usr/sbin/nologin shelfcast \
 && mkdir -p /var/lib/shelfcast/models \
 && chown -R shelfcast:shelfcast /var/lib/shelfcast

COPY --from=builder /opt/venv /opt/venv

# Working directory = writable state directory (Faust data dir, local model
# checkpoints, anything the app writes relative to its cwd).
WORKDIR /var/lib/shelfcast
USER shelfcast:shelfcast

# Faust web server; Prometheus metrics are served at /metrics.
EXPOSE 6066

CMD ["shelfcast", "worker"]
