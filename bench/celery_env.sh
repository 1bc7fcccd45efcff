#!/usr/bin/env bash
# The Celery peer's own virtualenv (bench/.celery-venv, gitignored): Celery is never a dependency of
# flowjobs, and flowjobs' venv never imports it. Idempotent; prints the venv's python on success.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.celery-venv
CELERY_SPEC="celery[redis]==5.7.0"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import celery, redis" 2>/dev/null; then
    echo "$PWD/$VENV/bin/python"
    exit 0
fi
PY=$(command -v python3.11 || command -v python3)
"$PY" -m venv --clear "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$CELERY_SPEC" >&2
"$VENV/bin/python" -c "import celery, redis" >&2
echo "$PWD/$VENV/bin/python"
