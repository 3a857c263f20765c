#!/usr/bin/env bash
# Stop what `make up` started: the auroratrack service, then the private server (if any), and
# say what was stopped, or that nothing was running. AURORATRACK_STATE as in scripts/up.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
state="${AURORATRACK_STATE:-.auroratrack}"
stopped=0
if [ -f "$state/serve.pid" ]; then
  pid=$(cat "$state/serve.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "asked auroratrack serve (pid $pid) to stop; it is still shutting down"
    else
      echo "stopped auroratrack serve (pid $pid)"
    fi
    stopped=1
  fi
  rm -f "$state/serve.pid"
fi
server="$state/server"
if [ -f "$server/mysqld.pid" ] && kill -0 "$(cat "$server/mysqld.pid")" 2>/dev/null; then
  pid=$(cat "$server/mysqld.pid")
  .venv/bin/python -m proxy.sandbox down --dir "$server"
  echo "stopped the private server (pid $pid, port $(cat "$server/port" 2>/dev/null || echo '?'));" \
       "its data stays in $server ('make clean' deletes it)"
  stopped=1
fi
[ "$stopped" = 1 ] || echo "nothing was running (no auroratrack serve or private server started by 'make up' here)"
exit 0
