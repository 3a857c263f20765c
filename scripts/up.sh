#!/usr/bin/env bash
# Start auroratrack in the background in front of a server; used by `make up`.
# With no upstream given, a private MariaDB/MySQL is started from the binaries on PATH, with the
# binlog settings auroratrack needs, in .auroratrack/server.
# It ends by printing the line that puts the `auroratrack` command (installed in .venv/bin) on
# PATH and points it at this service: the README's walk-through starts with that line.
# Usage: scripts/up.sh [UPSTREAM_HOST:PORT] [PROXY_LISTEN] [ADMIN_LISTEN]
# AURORATRACK_STATE (default .auroratrack) is where the run files, the data and the private
# server live; the tests point it at a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
upstream="${1:-}"; listen="${2:-127.0.0.1:3307}"; admin="${3:-127.0.0.1:3308}"
state="${AURORATRACK_STATE:-.auroratrack}"; mkdir -p "$state"; state=$(cd "$state" && pwd)
bin="$root/.venv/bin"
if [ -z "$upstream" ]; then
  port_file="$state/server/port"
  if [ ! -f "$port_file" ]; then
    mkdir -p "$state/server"
    # 33306 unless taken (a system MariaDB may hold 3306 already).
    "$bin/python" - "$port_file" <<'PY'
import socket, sys
from proxy.sandbox import find_free_port
with socket.socket() as s:
    port = 33306 if s.connect_ex(("127.0.0.1", 33306)) != 0 else find_free_port()
open(sys.argv[1], "w").write(str(port))
PY
  fi
  "$bin/python" -m proxy.sandbox up --dir "$state/server"
  upstream="127.0.0.1:$(cat "$port_file")"
  export AURORATRACK_USER=at_admin
  printf 'at_admin' > "$state/upstream-password"
else
  : "${AURORATRACK_USER:?set AURORATRACK_USER to the auroratrack account on $upstream}"
  printf '%s' "${AURORATRACK_UPSTREAM_PASSWORD:-}" > "$state/upstream-password"
fi
chmod 600 "$state/upstream-password"
if [ -f "$state/serve.pid" ] && kill -0 "$(cat "$state/serve.pid")" 2>/dev/null; then
  echo "auroratrack already running (pid $(cat "$state/serve.pid")); 'make down' stops it"
else
  : > "$state/serve.log"
  nohup "$bin/auroratrack" serve --upstream "$upstream" --user "$AURORATRACK_USER" \
    --password-file "$state/upstream-password" --listen "$listen" --admin "$admin" \
    --data-dir "$state/data" >> "$state/serve.log" 2>&1 &
  echo $! > "$state/serve.pid"
  for _ in $(seq 1 100); do
    grep -q "proxy on" "$state/serve.log" 2>/dev/null && break
    kill -0 "$(cat "$state/serve.pid")" 2>/dev/null || { cat "$state/serve.log"; rm -f "$state/serve.pid"; exit 1; }
    sleep 0.1
  done
fi
# The address serve reports, not the one asked for: port 0 picks a free one.
listen=$(sed -n 's/.*proxy on \([^ ]*\) ->.*/\1/p' "$state/serve.log" | tail -1)
host="${listen%:*}"; port="${listen##*:}"
cat <<MSG

auroratrack is up: proxy on $listen, in front of $upstream (log: $state/serve.log).
The auroratrack command is in .venv/bin. Put it on PATH and point it at this service
(the README's walk-through starts with this line):
    export PATH="$bin:\$PATH" AURORATRACK_DATA_DIR="$state/data"
Connect your applications to the proxy, for example:
    mariadb --no-defaults -h $host -P $port -u at_admin -pat_admin --skip-ssl
Stop everything with: make down
MSG
