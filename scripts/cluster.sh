#!/usr/bin/env bash
# Start N cero-api processes on ports 3001.. in cluster mode, against the local Redis and
# PostgreSQL, for trials; Ctrl-C (or SIGTERM, or any one process ending) stops them all.
#
#   scripts/cluster.sh [N]          (make cluster N=3)
#
# Settings (environment): DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/cero,
# created if missing), CERO_REDIS_URL (default redis://127.0.0.1:6379/0),
# CLUSTER_BASE_PORT (default 3001), CERO_API (default .venv/bin/cero-api),
# CLUSTER_STOP_TIMEOUT (default 60: seconds before a process that has not stopped is
# killed); every other CERO_* setting is passed to each process as it is. Each process's
# log lines are prefixed with its port.
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

pids=()       # the servers
prefixers=()  # one log prefixer per server, reading its stderr through a FIFO
logdir="$(mktemp -d)"
STOP_TIMEOUT="${CLUSTER_STOP_TIMEOUT:-60}"

# Wait until none of the given processes is alive, at most $1 seconds; 1 if some still are.
wait_gone() {
  local limit=$1 pid alive
  shift
  local deadline=$((SECONDS + limit))
  while :; do
    alive=0
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 0 ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# Ctrl-C, SIGTERM or a process ending: SIGTERM to every server (a second signal for those
# the group signal already reached: the drain is cut short), SIGKILL to any still there
# after CLUSTER_STOP_TIMEOUT (each server exits on its own within its drain + 15 s); then
# the prefixers, which end at their server's last line, or are killed.
stop_all() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! wait_gone "$STOP_TIMEOUT" "${pids[@]}"; then
      echo "cluster: a process outlived ${STOP_TIMEOUT}s (CLUSTER_STOP_TIMEOUT): killing it" >&2
      kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "${#prefixers[@]}" -gt 0 ]; then
    wait_gone 5 "${prefixers[@]}" || kill -KILL "${prefixers[@]}" 2>/dev/null || true
    wait "${prefixers[@]}" 2>/dev/null || true
  fi
  rm -rf "$logdir"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for i in $(seq 0 $((N - 1))); do
  port=$((BASE_PORT + i))
  fifo="$logdir/$port"
  mkfifo "$fifo"
  # The prefixer ignores Ctrl-C's SIGINT and the group's SIGTERM: it must outlive its
  # server's last lines (it ends at EOF; stop_all kills it if not). A server whose
  # prefixer is gone anyway still stops: its log writes then fail, and are dropped.
  (trap '' INT TERM && exec sed -u "s/^/[$port] /" <"$fifo" >&2) &
  prefixers+=("$!")
  "$CERO_API" serve --port "$port" 2>"$fifo" &
  pids+=("$!")
done
echo "cluster: $N processes on ports $BASE_PORT..$((BASE_PORT + N - 1)) (Redis $CERO_REDIS_URL); Ctrl-C stops them" >&2
set +e
wait -n "${pids[@]}"
status=$?
echo "cluster: a process ended (exit $status): stopping the others" >&2
exit "$status"
