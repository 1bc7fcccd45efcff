#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install flowjobs with its dev extras (fast when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
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
want=$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:16])')
stamp=.venv/.flowjobs-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing flowjobs and its dev dependencies into .venv ..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
