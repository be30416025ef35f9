#!/usr/bin/env bash
# Install agentprobe into .venv and run the offline demo: a bundled agent using the real
# openai SDK, behind the proxy, against a bundled local fake provider over HTTPS.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
venv=$("$root/scripts/venv.sh" demo)
cd "$root"
exec "$venv/bin/agentprobe" demo "$@"
