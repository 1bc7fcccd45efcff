#!/usr/bin/env bash
# The main job on a fresh machine: install, find or start a Redis, start a worker, trigger the
# example flow, wait for it, and print the run record and where to look at it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/flowjobs demo "$@"
