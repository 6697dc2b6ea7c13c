#!/usr/bin/env bash
# Install the Debian packages whose real data the apps evaluate on (nothing is downloaded at run
# time; these ship the files):
#   mricron-data           Colin27 T1 + AAL atlas (medseg's real-data task)
#   pocketsphinx-testdata  16 kHz speech recordings (talkinghead's driving audio)
# Usage: scripts/install_system_data.sh [--check] [--help]
#   --check  only report which packages are missing (exit 1 if any)
set -euo pipefail
PKGS=(mricron-data pocketsphinx-testdata)
case "${1:-}" in
  -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "${1:-}" = "--check" ]; then echo "missing: ${missing[*]}"; exit 1; fi
if ! command -v apt-get >/dev/null; then
  echo "install_system_data: no apt-get here; the tests that read ${missing[*]} will say what is missing" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get install -y -q "${missing[@]}" >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
