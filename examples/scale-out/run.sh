#!/usr/bin/env bash
# The scale-out profile on one machine: PostgreSQL (the shared feedback store), an MLflow
# tracking server (the shared registry, PostgreSQL backend, artifacts proxied by the server),
# N `cascade-router serve` replicas and HAProxy in front of them.  Ctrl-C stops everything.
#
#   examples/scale-out/run.sh [--replicas N] [--port P] [--dir DIR]
#
# Already have a database or a registry?  Export CASCADE_FEEDBACK_URL (and PGPASSWORD) or
# CASCADE_TRACKING_URI (and MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN) and
# the script uses them instead of starting its own.  Needs the postgres and haproxy packages
# (scripts/services/install.sh) and cascade-router with the serve, train and postgres extras
# (PYTHON names the interpreter; default: the repository's .venv, else python3).
#
# When everything answers it writes DIR/state.env (the addresses and process ids) and prints
# how to use it; every process logs to DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
replicas=2
lb_port=8080
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas=$2; shift 2 ;;
    --port) lb_port=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "usage: $0 [--replicas N] [--port P] [--dir DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
dir=${dir:-$(mktemp -d /tmp/cascade-scale-out.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rm -f "$dir/ready" "$dir/state.env"

pids=()        # what we started, stopped in reverse order on exit
pg_ctl_stop=() # PostgreSQL is stopped through pg_ctl
cleanup() {
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ ${#pg_ctl_stop[@]} -gt 0 ]; then "${pg_ctl_stop[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "${pg_dir:-}" ] && [ "$pg_dir" != "$dir/postgres" ]; then rm -rf "$pg_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL SECONDS WHAT: until URL answers 200
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "scale-out: $3 did not answer $1 within $2 s (logs in $dir)" >&2
      exit 1
    fi
    sleep 0.5
  done
}

# --- PostgreSQL: one cluster, a database for the feedback store and one for the registry ----
if [ -z "${CASCADE_FEEDBACK_URL:-}" ] || [ -z "${CASCADE_TRACKING_URI:-}" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bindir" ] || { echo "scale-out: PostgreSQL missing: scripts/services/install.sh" >&2; exit 1; }
  pg_port=$(free_port)
  export PGPASSWORD=${PGPASSWORD:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
  pg_dir=$dir/postgres
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: its cluster lives in a folder of its own that the
    # postgres account can reach (DIR may sit in a private one)
    pg_dir=$(mktemp -d /tmp/cascade-scale-out-pg.XXXXXX)
    chown postgres:postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
  fi
  mkdir -p "$pg_dir"
  printf '%s\n' "$PGPASSWORD" | "${as_pg[@]}" tee "$pg_dir/pwfile" >/dev/null
  "${as_pg[@]}" "$bindir/initdb" -D "$pg_dir/data" -U cascade --auth=scram-sha-256 \
    --pwfile="$pg_dir/pwfile" --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pg_dir -c max_connections=200" \
    start >/dev/null
  pg_ctl_stop=("${as_pg[@]}" "$bindir/pg_ctl" -D "$pg_dir/data" -m fast -w stop)
  for db in feedback mlflow; do
    "$bindir/createdb" -h 127.0.0.1 -p "$pg_port" -U cascade "$db"
  done
  # the password stays in PGPASSWORD (libpq reads it), never in a URL
  export CASCADE_FEEDBACK_URL=${CASCADE_FEEDBACK_URL:-postgresql+psycopg://cascade@127.0.0.1:$pg_port/feedback}
  echo "scale-out: PostgreSQL on 127.0.0.1:$pg_port"
fi

# --- MLflow tracking server: registry in PostgreSQL, artifacts served by the server ---------
if [ -z "${CASCADE_TRACKING_URI:-}" ]; then
  ml_port=$(free_port)
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$PYTHON" -m mlflow server \
    --backend-store-uri "postgresql+psycopg://cascade@127.0.0.1:$pg_port/mlflow" \
    --serve-artifacts --artifacts-destination "$dir/mlflow-artifacts" \
    --host 127.0.0.1 --port "$ml_port" --workers 1 >"$dir/mlflow.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$ml_port/health" 180 "the MLflow server"
  export CASCADE_TRACKING_URI=http://127.0.0.1:$ml_port
  echo "scale-out: MLflow server on $CASCADE_TRACKING_URI"
fi

# --- the replicas --------------------------------------------------------------------------
# Create the store's tables once before N replicas race to (they would wait on a lock).
"$PYTHON" -c 'import os; from router.feedback import FeedbackStore; FeedbackStore(os.environ["CASCADE_FEEDBACK_URL"]).close()'
ports=()
replica_pids=()
for ((i = 1; i <= replicas; i++)); do
  port=$(free_port)
  "$PYTHON" -m training.cli serve --config "$here/replica.toml" --port "$port" \
    >"$dir/replica-$i.log" 2>&1 &
  pids+=($!)
  replica_pids+=($!)
  ports+=("$port")
done

# --- HAProxy --------------------------------------------------------------------------------
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
cp "$here/haproxy.cfg" "$dir/haproxy.cfg"
for ((i = 1; i <= replicas; i++)); do
  echo "    server r$i 127.0.0.1:${ports[i - 1]}" >>"$dir/haproxy.cfg"
done
export CASCADE_LB_BIND=127.0.0.1:$lb_port CASCADE_LB_SOCKET=$dir/haproxy.sock CASCADE_LB_REPLICAS=$replicas
"$haproxy" -c -q -f "$dir/haproxy.cfg"
"$haproxy" -W -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!

for ((i = 1; i <= replicas; i++)); do
  wait_http "http://127.0.0.1:${ports[i - 1]}/readyz" 600 "replica $i"
done
wait_http "http://127.0.0.1:$lb_port/lb-ready" 60 "HAProxy (every replica up)"

cat >"$dir/state.env" <<STATE
LB_URL=http://127.0.0.1:$lb_port
LB_SOCKET=$dir/haproxy.sock
HAPROXY_PID=$haproxy_pid
REPLICA_PORTS="${ports[*]}"
REPLICA_PIDS="${replica_pids[*]}"
CASCADE_FEEDBACK_URL=$CASCADE_FEEDBACK_URL
CASCADE_TRACKING_URI=$CASCADE_TRACKING_URI
STATE
touch "$dir/ready"
echo "scale-out: $replicas replicas behind http://127.0.0.1:$lb_port (ports ${ports[*]}); state in $dir/state.env"
echo "scale-out: point OpenAI clients at http://127.0.0.1:$lb_port/v1; promote with"
echo "  CASCADE_TRACKING_URI=$CASCADE_TRACKING_URI cascade-router promote VERSION"
echo "scale-out: Ctrl-C stops everything"
while true; do
  sleep 3600 &
  wait $! || true
done
