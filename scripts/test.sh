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
# The Redis outage and Sentinel failover tests start redis-server processes of their own.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's redis-server for the outage and Sentinel tests ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "the outage and Sentinel tests need redis-server: sudo apt-get install -y redis-server" >&2
    exit 1
  fi
fi
exec .venv/bin/python -m pytest "$@"
