#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter (mitmproxy 12 needs it), or fail.
set -u
candidates=(python3.12 python3.13 python3.14 python3 python)
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | sort -V); do
    candidates+=("$(pyenv root)/versions/$v/bin/python3")
  done
fi
for dir in /root/.pyenv/versions/*/bin "$HOME"/.pyenv/versions/*/bin /usr/local/bin /usr/bin; do
  [ -x "$dir/python3" ] && candidates+=("$dir/python3")
done
for py in "${candidates[@]}"; do
  path=$(command -v "$py" 2>/dev/null) || continue
  # pyenv shims exist for versions that are not selected; running them is the only real test.
  if "$path" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
    "$path" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "agentprobe needs Python >= 3.12 (mitmproxy 12 requires it); none found on PATH or under pyenv" >&2
exit 1
