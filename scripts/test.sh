#!/usr/bin/env bash
# Set up .venv if needed, lint, then run the test suite: every test against one embedded
# redis-server, and the tests marked `cluster` again against a local 3-master Redis Cluster
# started from the same binary. The multi-worker scale-out test (`cluster_only`) runs on the
# cluster only: scale-out is what Redis Cluster is for. Three passes run side by side, since
# much of each waits on sockets, rebalances and child processes: the cluster pass,
# tests/streamer/ops and tests/test_e2e.py (the end-to-end replays among them) on one Redis,
# and the rest on one Redis. The tests marked `solo` (worker processes replaying a backlog of both
# input topics, whose relative read progress load can change) run after them, with the
# machine to themselves.
# Arguments go to pytest and run the one pass they name.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "$#" -gt 0 ]; then
    exec .venv/bin/pytest "$@"
fi
log=$(mktemp)
replays_log=$(mktemp)
trap 'rm -f "$log" "$replays_log"' EXIT
failed=()
replays=(tests/streamer/ops tests/test_e2e.py)
SHELFCAST_TEST_REDIS=cluster .venv/bin/pytest -m "cluster and not solo" >"$log" 2>&1 &
cluster=$!
.venv/bin/pytest -m "not cluster_only and not solo" "${replays[@]}" >"$replays_log" 2>&1 &
replaying=$!
.venv/bin/pytest -m "not cluster_only and not solo" "${replays[@]/#/--ignore=}" \
    || failed+=("one Redis")
echo "--- meanwhile, ${replays[*]} on one Redis"
wait "$replaying" || failed+=("one Redis, replays")
cat "$replays_log"
echo "--- meanwhile, the tests marked cluster on a Redis Cluster (SHELFCAST_TEST_REDIS=cluster)"
wait "$cluster" || failed+=("Redis Cluster")
cat "$log"
echo "--- the tests marked solo, one at a time: on a Redis Cluster, then on one Redis"
SHELFCAST_TEST_REDIS=cluster .venv/bin/pytest -m "cluster and solo" || failed+=("solo, Redis Cluster")
.venv/bin/pytest -m "solo and not cluster_only" || failed+=("solo, one Redis")
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: failed: $(IFS=,; echo "${failed[*]}")" >&2
    exit 1
fi
