#!/usr/bin/env bash
# Run every app's benchmark (ssmkit bench <app>) on one device, one after the other, each under
# its own time limit, and keep each app's table in OUT_DIR/<app>.md. A bench that fails or runs
# out of time is reported and the others still run.
set -u

usage() {
  cat <<'TXT'
usage: scripts/bench_apps.sh [--device cuda|cpu] [--dtype bf16|fp32] [--out DIR] [--timeout SECONDS]
                             [--app-timeout APP=SECONDS ...] [--apps crack,medseg,...] [--python PY]

Runs `ssmkit bench <app>` for each app on the device, from this source tree
(PYTHONPATH=core:apps, so no install is needed), and writes DIR/<app>.md and DIR/<app>.log.
Prints one line per app at the end: its status and wall seconds.

  --device    cpu or cuda (default cuda)
  --dtype     bf16 (autocast) or fp32 (default bf16)
  --out       output folder (default bench-apps)
  --timeout   seconds allowed per app (default 150)
  --app-timeout  APP=SECONDS: another limit for one app (repeatable)
  --apps      comma-separated subset (default: all five)
  --python    interpreter (default python3)
TXT
}

device=cuda dtype=bf16 out=bench-apps limit=150 apps=crack,medseg,hashing,talkinghead,anomaly py=python3
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --device) device=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    --app-timeout) declare "limit_${2%%=*}=${2#*=}"; shift 2 ;;
    --apps) apps=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$root/core:$root/apps"
mkdir -p "$out"

# Each app's arguments for a full-size run on the chosen device.
args_for() {
  case "$1" in
    crack) echo "--device $device --dtype $dtype" ;;
    medseg) echo "--device $device --dtype $dtype --markdown" ;;
    hashing) if [ "$device" = cpu ]; then echo "--threads 1"; else echo "--device $device --dtype $dtype --skip-search --batch 1024 --encoder-repeats 20"; fi ;;
    talkinghead) echo "--device $device --dtype $dtype --reps 5" ;;
    anomaly) if [ "$device" = cpu ]; then echo ""; else echo "--gpu"; fi ;;
    *) return 1 ;;
  esac
}

summary=()
IFS=, read -r -a list <<< "$apps"
for app in "${list[@]}"; do
  if ! a=$(args_for "$app"); then echo "unknown app: $app" >&2; exit 2; fi
  own="limit_$app"; secs=${!own:-$limit}
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$secs" "$py" -m ssmkit bench "$app" $a > "$out/$app.md" 2> "$out/$app.log"
  rc=$?
  took=$(( $(date +%s) - start ))
  case $rc in
    0) status=ok ;;
    124) status="timed out after ${secs}s" ;;
    *) status="failed (exit $rc, see $out/$app.log)" ;;
  esac
  summary+=("$app: $status, ${took}s")
done
printf '%s\n' "${summary[@]}"
