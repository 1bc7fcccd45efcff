#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install flowjobs with its dev extras exactly as uv.lock pins
# them (hash-checked); fast when neither pyproject.toml nor uv.lock changed. README, "Dependencies"
# says how to upgrade the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
# The uv that reads the lock; bump it with the lock when a newer uv changes the lock's format.
UV_VERSION=0.13.9
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
       && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py="$candidate"; break
    fi
  done
fi
[ -n "$py" ] || { echo "flowjobs needs Python 3.11 or newer on PATH (or set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
want=$(cat pyproject.toml uv.lock | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
stamp=.venv/.flowjobs-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing flowjobs and its locked dev dependencies into .venv ..." >&2
  pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" "uv==$UV_VERSION"
  .venv/bin/uv export --quiet --frozen --extra dev --no-emit-project --format requirements-txt \
    -o .venv/requirements.lock.txt
  "${pip[@]}" --require-hashes --no-deps -r .venv/requirements.lock.txt
  "${pip[@]}" --no-deps -e .
  echo "$want" > "$stamp"
fi
