#!/usr/bin/env bash
# The whole test suite against a real Redis: REDIS_URL if one answers, else 127.0.0.1:6379,
# else an embedded server the tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

# need COMMAND PACKAGE WHY: install Debian's PACKAGE when COMMAND is missing and this runs as root
# (CI); otherwise say what to install. Nothing is ever downloaded outside Debian's packages.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $2 for $3 ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  else
    echo "$3 need $1: sudo apt-get install -y $2" >&2
    exit 1
  fi
}
need chromium chromium "the browser tests"                                   # Playwright drives Debian's Chromium
need redis-server redis-server "the Redis outage and Sentinel failover tests" # they start servers of their own
need openssl openssl "the Sentinel TLS test"                                 # it makes a throwaway CA
need promtool prometheus "the metrics tests"                                  # promtool checks /metrics
exec .venv/bin/python -m pytest "$@"
