#!/usr/bin/env bash
# The whole test suite against a real Redis: REDIS_URL if one answers, else 127.0.0.1:6379,
# else an embedded server the tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
