#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the whole test suite (embedded Kafka and Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
