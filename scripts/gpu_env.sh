# Sourced by the scripts/gpu_*.sh device calls: installs the wheels carried in .whl (fla-core,
# einops: not on the device's python) into /tmp/site, sets PYTHONPATH to the source tree, and
# prepares $OUT. Run from the repo root on the device machine.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=core:apps${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# fla-core would autotune ~260 kernel configs on its first GLA call (minutes on a fresh machine);
# pin one config per kernel through fla's own config directory (scripts/fla_pinned_configs.py).
if [ -z "${FLA_AUTOTUNE:-}" ]; then
  python3 scripts/fla_pinned_configs.py /tmp/fla_configs >/dev/null && export FLA_CONFIG_DIR=/tmp/fla_configs FLA_CACHE_MODE=default
fi
# The two GPU tables, as the session scripts call them: NAME writes $OUT/NAME.txt (and .json);
# further arguments go to the bench (e.g. --device-only).
issue4_table() {
  local name=$1; shift
  timeout 120 python3 -c "import sys; from ssmkit.bench.scan_gpu import gpu_table; gpu_table(sys.argv[1:])" \
    --backends triton --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1; echo "$name rc=$?"
}
scan2d_table() {
  local name=$1; shift
  timeout 120 python3 -c "import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" \
    --gpu --reps 10 --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1; echo "$name rc=$?"
}
# Session 7 on: probe NAME SHAPES DTYPES ROUNDS VARIANTS runs scripts/gpu_fwd_probe.py --bwd into
# $OUT/NAME.txt; gpu_tests FILES... runs their gpu tests, on 8 workers when pytest-xdist is carried.
probe() {
  timeout 200 python3 scripts/gpu_fwd_probe.py --shapes "$2" --dtypes "$3" --bwd --rounds "$4" --variants "$5" \
    > "$OUT/$1.txt" 2>&1; echo "$1 rc=$?"; cat "$OUT/$1.txt"
}
gpu_tests() {
  local workers=""; python3 -c "import xdist" 2>/dev/null && workers="-n 8"
  timeout 200 python3 -m pytest -q -m gpu $workers -p no:cacheprovider "$@" > "$OUT/gpu_tests.txt" 2>&1
  echo "tests rc=$? ($workers)"; tail -4 "$OUT/gpu_tests.txt"
}
