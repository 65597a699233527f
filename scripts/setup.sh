#!/usr/bin/env bash
# Create .venv and install shelfcast with its test tools. Safe to run again: it reinstalls only
# when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "shelfcast needs Python 3.11+; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.shelfcast-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q torch==2.13.0  # the CUDA build
  else
    # CPU-only machine: the CPU build, without several GB of CUDA packages. Where the PyTorch
    # index is unreachable, pip's configured local wheels or index are used instead.
    .venv/bin/pip install -q --retries 0 --timeout 15 \
      --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
      || .venv/bin/pip install -q torch==2.13.0
  fi
fi
.venv/bin/pip install -q -e ".[dev]"
touch "$stamp"
