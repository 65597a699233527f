#!/usr/bin/env bash
# The global LSTM on a CUDA machine, in one go: its tests on the GPU, scripts/bench_lstm.py on
# the GPU and on the same machine's CPU, and scripts/bench_lstm_batch.py (batch and network
# sizes) on the GPU. docs/lstm.md ("On a GPU") has the figures of an H200.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench_gpu.sh [--data CSV] [--out DIR] [--wheels DIR] [--python PY]
                           [--device DEV] [--epochs N]

Runs on a machine with an NVIDIA GPU and a CUDA build of torch:
  1. the LSTM tests (tests/models/lstm) with SHELFCAST_TEST_DEVICE=DEV;
  2. scripts/bench_lstm.py --device cpu (one thread) in the background, and meanwhile
     scripts/bench_lstm.py --device DEV, then scripts/bench_lstm_batch.py --device DEV.
It writes DIR/tests.log, DIR/{DEV,cpu,batch}.log and each benchmark's JSON under
DIR/{DEV,cpu,batch}/ (default DIR: bench-results/gpu), and exits 1 if any step failed.

  --data CSV    the full Online Retail year (default: the path `shelfcast data path` prints;
                `shelfcast data fetch` downloads it)
  --wheels DIR  install these wheels first (pip --no-index --target), for a machine that
                has torch but cannot reach PyPI: the project's other dependencies
  --python PY   the interpreter (default: the repository's .venv/bin/python if there is
                one, else python3); scripts/setup.sh installs torch's CUDA build where
                nvidia-smi answers
  --device DEV  cuda (default), cuda:N, or cpu for a dry run of this script without a GPU
  --epochs N    the benchmarks' epochs (default: the trainer's; pass 1 for a dry run)
EOF
}

root="$(cd "$(dirname "$0")/.." && pwd)"
absolute() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
data="" out="bench-results/gpu" wheels="" py="" dev="cuda" epochs=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --data|--out|--wheels|--python|--device|--epochs)
      [[ $# -ge 2 ]] || { echo "$1 needs a value (see --help)" >&2; exit 2; }
      case "$1" in
        --data) data="$(absolute "$2")" ;;
        --out) out="$2" ;;
        --wheels) wheels="$(absolute "$2")" ;;
        --python) py="$2" ;;
        --device) dev="$2" ;;
        --epochs) epochs=(--epochs "$2") ;;
      esac
      shift 2 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
out="$(absolute "$out")"
if [[ -z "$py" ]]; then
  py=python3
  [[ -x "$root/.venv/bin/python" ]] && py="$root/.venv/bin/python"
elif [[ "$py" == */* ]]; then
  py="$(absolute "$py")"  # not resolved: a virtual environment's python is a link
fi
cd "$root"

cpu="" site=""
cleanup() {
  [[ -n "$cpu" ]] && kill "$cpu" 2>/dev/null
  [[ -n "$site" ]] && rm -rf "$site"
  return 0
}
trap cleanup EXIT

if [[ -n "$wheels" ]]; then
  site="$(mktemp -d)"
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$py" -c "import torch, models.lstm.network"; then
  echo "$py cannot import torch or the project: run scripts/setup.sh, or pass --python" \
    "(and --wheels on a machine without network)" >&2
  exit 1
fi
if [[ "$dev" == cuda* ]] && ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device visible to $py's torch: run this on a GPU machine with torch's CUDA" \
    "build (docs/deployment.md, docker-compose.gpu.yml)" >&2
  exit 1
fi
common=()
[[ -n "$data" ]] && common+=(--data "$data")
common+=(${epochs[@]+"${epochs[@]}"})
mkdir -p "$out"
failed=()
nvidia-smi -L || true

echo "--- 1. the LSTM tests on $dev"
SHELFCAST_TEST_DEVICE="$dev" "$py" -m pytest -q -p no:cacheprovider tests/models/lstm 2>&1 \
  | tee "$out/tests.log" || failed+=("the tests ($out/tests.log)")

echo "--- 2. bench_lstm.py on the CPU (background), on $dev, then the batch sizes on $dev"
if [[ "$dev" != cpu ]]; then
  "$py" scripts/bench_lstm.py ${common[@]+"${common[@]}"} --device cpu --threads 1 \
    --out "$out/cpu" >"$out/cpu.log" 2>&1 &
  cpu=$!
fi
"$py" scripts/bench_lstm.py ${common[@]+"${common[@]}"} --device "$dev" --out "$out/$dev" 2>&1 \
  | tee "$out/$dev.log" || failed+=("bench_lstm.py on $dev ($out/$dev.log)")
"$py" scripts/bench_lstm_batch.py ${common[@]+"${common[@]}"} --device "$dev" \
  --out "$out/batch" 2>&1 | tee "$out/batch.log" || failed+=("bench_lstm_batch.py ($out/batch.log)")
if [[ -n "$cpu" ]]; then
  echo "--- waiting for the CPU run"
  wait "$cpu" || failed+=("bench_lstm.py on the CPU ($out/cpu.log)")
  cpu=""
  tail -n 12 "$out/cpu.log"
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all passed; results under $out"
