#!/usr/bin/env bash
# What the benchmarks need beyond the test suite: wrk (the load generator of server.py),
# redis-server, and Flask-Limiter (the peer measured beside us).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq wrk redis-server >/dev/null
fi
python3 -m pip install -q -e '.[dev,bench]'
