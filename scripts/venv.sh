#!/usr/bin/env bash
# Create (or reuse) .venv with a Python >= 3.12 and install agentprobe with the given extras.
# Usage: scripts/venv.sh EXTRAS   (e.g. "demo" or "test")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-demo}
venv=${AGENTPROBE_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
  py=$("$root/scripts/find-python.sh")
  echo "agentprobe: creating $venv with $py" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" >&2
echo "$venv"
