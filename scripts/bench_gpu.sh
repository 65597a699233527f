#!/usr/bin/env bash
# The global LSTM on a CUDA machine, in one go: its tests on the GPU, scripts/bench_lstm.py on
# the GPU and on the same machine's CPU, and scripts/bench_lstm_batch.py (batch and network
# sizes) on the GPU. docs/lstm.md ("On a GPU") has the figures of an H200.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench_gpu.sh [--data CSV] [--out DIR] [--wheels DIR] [--python PY]
                           [--device DEV] [--epochs N]

Runs, from the repository's root, on a machine with an NVIDIA GPU and a CUDA build of torch:
  1. the LSTM tests (tests/models/lstm) with SHELFCAST_TEST_DEVICE=cuda;
  2. scripts/bench_lstm.py --device cpu (one thread) in the background, and meanwhile
     scripts/bench_lstm.py --device cuda, then scripts/bench_lstm_batch.py --device cuda.
It writes DIR/tests.log, DIR/{cuda,cpu,batch}.log and each benchmark's JSON under
DIR/{cuda,cpu,batch}/ (default DIR: bench-results/gpu).

  --data CSV    the full Online Retail year (default: the path `shelfcast data path` prints;
                `shelfcast data fetch` downloads it)
  --wheels DIR  install these wheels first (pip --no-index --target), for a machine that
                has torch but cannot reach PyPI: the project's other dependencies
  --python PY   the interpreter with CUDA torch (default: python3)
  --device DEV  cuda (default), or cpu for a dry run of this script on a machine without one
  --epochs N    the benchmarks' epochs (default: the trainer's; a dry run takes 1)

Where the project is installed with pip (`pip install -e .[dev]` on a CUDA machine gets
torch's CUDA build), neither --wheels nor --python is needed.
EOF
}

data="" out="bench-results/gpu" wheels="" py="python3" dev="cuda" epochs=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --device) dev="$2"; shift 2 ;;
    --epochs) epochs=(--epochs "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."

if [[ -n "$wheels" ]]; then
  site="$(mktemp -d)"
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ "$dev" == cuda ]] && ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device visible to $py's torch: run this on a GPU machine with torch's CUDA" \
    "build (docs/deployment.md, docker-compose.gpu.yml)" >&2
  exit 1
fi
data_args=()
[[ -n "$data" ]] && data_args=(--data "$data")
mkdir -p "$out"
nvidia-smi -L || true

echo "--- 1. the LSTM tests on $dev"
SHELFCAST_TEST_DEVICE="$dev" "$py" -m pytest -q -p no:cacheprovider tests/models/lstm 2>&1 \
  | tee "$out/tests.log" || echo "(the tests failed: $out/tests.log)"

echo "--- 2. bench_lstm.py on the CPU (background), on $dev, then the batch sizes on $dev"
common=("${data_args[@]}" "${epochs[@]}")
cpu=""
if [[ "$dev" != cpu ]]; then
  "$py" scripts/bench_lstm.py "${common[@]}" --device cpu --threads 1 --out "$out/cpu" \
    >"$out/cpu.log" 2>&1 &
  cpu=$!
fi
"$py" scripts/bench_lstm.py "${common[@]}" --device "$dev" --out "$out/$dev" 2>&1 \
  | tee "$out/$dev.log"
"$py" scripts/bench_lstm_batch.py "${common[@]}" --device "$dev" --out "$out/batch" 2>&1 \
  | tee "$out/batch.log"
if [[ -n "$cpu" ]]; then
  echo "--- waiting for the CPU run"
  wait "$cpu" || echo "(the CPU run failed: $out/cpu.log)"
  tail -n 12 "$out/cpu.log"
fi
