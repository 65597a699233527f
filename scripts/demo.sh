#!/usr/bin/env bash
# Set up .venv if needed, then run `shelfcast demo` on embedded Kafka and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/shelfcast demo "$@"
