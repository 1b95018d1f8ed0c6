#!/usr/bin/env bash
# Start N cero-api processes on ports 3001.. in cluster mode, against the local Redis and
# PostgreSQL, for trials; Ctrl-C (or SIGTERM, or any one process ending) stops them all.
#
#   scripts/cluster.sh [N]          (make cluster N=3)
#
# Settings (environment): DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/cero,
# created if missing), CERO_REDIS_URL (default redis://127.0.0.1:6379/0),
# CLUSTER_BASE_PORT (default 3001), CERO_API (default .venv/bin/cero-api); every other
# CERO_* setting is passed to each process as it is. Each process's log lines are
# prefixed with its port.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${N:-2}}"
BASE_PORT="${CLUSTER_BASE_PORT:-3001}"
CERO_API="${CERO_API:-.venv/bin/cero-api}"
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/cero}"
export CERO_REDIS_URL="${CERO_REDIS_URL:-redis://127.0.0.1:6379/0}"

if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
  echo "cluster: N must be a positive number, not '$N'" >&2
  exit 2
fi
if ! redis-cli -u "$CERO_REDIS_URL" ping >/dev/null 2>&1; then
  echo "cluster: Redis does not answer at $CERO_REDIS_URL (CERO_REDIS_URL)" >&2
  exit 1
fi
# A missing database is created (trials); an unreachable server is reported by migrate.
db_name="${DATABASE_URL##*/}"
db_name="${db_name%%\?*}"
admin_url="${DATABASE_URL%/*}/postgres"
if command -v psql >/dev/null 2>&1 &&
  [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" 2>/dev/null)" = "" ] &&
  psql "$admin_url" -c "SELECT 1" >/dev/null 2>&1; then
  psql "$admin_url" -qc "CREATE DATABASE \"$db_name\"" && echo "cluster: created database $db_name" >&2
fi

# Migrate once before the processes start (serve migrates too, under an advisory lock).
"$CERO_API" migrate

pids=()
stop_all() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for i in $(seq 0 $((N - 1))); do
  port=$((BASE_PORT + i))
  # The prefixing sed ignores Ctrl-C's SIGINT: it must outlive its server's last lines.
  "$CERO_API" serve --port "$port" 2> >(trap '' INT && exec sed -u "s/^/[$port] /" >&2) &
  pids+=("$!")
done
echo "cluster: $N processes on ports $BASE_PORT..$((BASE_PORT + N - 1)) (Redis $CERO_REDIS_URL); Ctrl-C stops them" >&2
set +e
wait -n "${pids[@]}"
status=$?
echo "cluster: a process ended (exit $status): stopping the others" >&2
exit "$status"
