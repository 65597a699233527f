#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the whole test suite (embedded Kafka and Redis);
# then the tests marked `cluster` again, against a local 3-master Redis Cluster started from the
# same redis-server binary. Arguments go to pytest and run the one pass they name.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "$#" -gt 0 ]; then
    exec .venv/bin/pytest "$@"
fi
.venv/bin/pytest
echo "--- again on a Redis Cluster (SHELFCAST_TEST_REDIS=cluster), the tests marked cluster"
SHELFCAST_TEST_REDIS=cluster exec .venv/bin/pytest -m cluster
