# Sourced by the scripts/gpu_*.sh device calls: installs the wheels carried in .whl (fla-core,
# einops: not on the device's python) into /tmp/site, sets PYTHONPATH to the source tree, and
# prepares $OUT. Run from the repo root on the device machine.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=core:apps${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
