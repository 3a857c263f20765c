#!/usr/bin/env bash
# Stop what `make up` started: the auroratrack service, then the private server (if any).
set -uo pipefail
cd "$(dirname "$0")/.."
state=.auroratrack
if [ -f "$state/serve.pid" ]; then
  pid=$(cat "$state/serve.pid")
  kill "$pid" 2>/dev/null && for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$state/serve.pid"
fi
[ -d "$state/server" ] && .venv/bin/python -m proxy.sandbox down --dir "$state/server"
exit 0
