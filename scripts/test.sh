#!/usr/bin/env bash
# The whole test suite against a real Redis: REDIS_URL if one answers, else 127.0.0.1:6379,
# else an embedded server the tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The browser tests drive Debian's Chromium (browsers are never downloaded).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser tests need Chromium: sudo apt-get install -y chromium" >&2
    exit 1
  fi
fi
# The metrics tests check /metrics with Debian's promtool (package prometheus).
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's prometheus (promtool) for the metrics tests ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "the metrics tests need promtool: sudo apt-get install -y prometheus" >&2
    exit 1
  fi
fi
exec .venv/bin/python -m pytest "$@"
