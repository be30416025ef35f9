#!/usr/bin/env bash
# Install agentprobe with its test dependencies into .venv and run the test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
venv=$("$root/scripts/venv.sh" test)
cd "$root"
# Tests must not inherit a proxy from the caller's shell.
unset HTTPS_PROXY HTTP_PROXY https_proxy http_proxy ALL_PROXY all_proxy NO_PROXY no_proxy SSL_CERT_FILE REQUESTS_CA_BUNDLE
exec "$venv/bin/python" -m pytest -q "$@"
