#!/usr/bin/env bash
# Make sure the local PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) used by the
# serving tests are running: start whichever is not listening. Never fails the run: when a
# service cannot be started it prints a warning and the tests that need it are skipped.
set -u

listening() { # host port -> 0 when something accepts TCP connections there
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for() { # name host port seconds
  local i
  for ((i = 0; i < $4 * 5; i++)); do
    listening "$2" "$3" && return 0
    sleep 0.2
  done
  return 1
}

warn() { echo "ensure_services: warning: $*" >&2; }

if listening 127.0.0.1 5432; then
  :
elif ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
  warn "PostgreSQL is not running and not installed (no pg_ctlcluster); its tests will be skipped"
else
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$version" ]; then
    warn "no cluster under /etc/postgresql; PostgreSQL tests will be skipped"
  else
    echo "ensure_services: starting PostgreSQL $version ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    wait_for postgresql 127.0.0.1 5432 20 || warn "PostgreSQL did not start; its tests will be skipped"
  fi
fi

if listening 127.0.0.1 6379; then
  :
elif ! command -v redis-server >/dev/null 2>&1; then
  warn "Redis is not running and not installed (no redis-server); its tests will be skipped"
else
  echo "ensure_services: starting Redis ..."
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
  wait_for redis 127.0.0.1 6379 10 || warn "Redis did not start; its tests will be skipped"
fi

exit 0
