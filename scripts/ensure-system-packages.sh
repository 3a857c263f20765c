#!/usr/bin/env bash
# Install the Debian packages a command needs when they are missing (and we are root).
# Usage: scripts/ensure-system-packages.sh server|clients|bench
# server:  a MySQL/MariaDB server binary (mariadbd or mysqld) and its command-line client
# clients: the above, plus Node.js/npm for the non-Python driver tests, docker-compose to
#          validate docker-compose.yml (no Docker engine needed for `docker-compose config`),
#          libmariadb-dev to build MariaDB's Python connector (a test client), and MariaDB's
#          own test programs (mariadb-test, mariadb-client-test and the main suite's data) that
#          the protocol tests replay through the proxy
# bench:   the above, plus sysbench, haproxy and valgrind
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mariadbd || have mysqld || need+=(mariadb-server)
have mariadb || have mysql || need+=(mariadb-client)
case "${1:-server}" in
  clients|bench) have node || need+=(nodejs); have npm || need+=(npm)
                 have docker-compose || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
                 have mariadb_config || need+=(libmariadb-dev)
                 if have mariadbd; then
                   have mariadb-test || need+=(mariadb-test)
                   [ -d /usr/share/mariadb/mariadb-test ] || [ -d /usr/share/mysql/mysql-test ] || need+=(mariadb-test-data)
                 fi ;;
esac
case "${1:-server}" in
  bench) have sysbench || need+=(sysbench); have haproxy || need+=(haproxy)
         have valgrind || need+=(valgrind) ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
