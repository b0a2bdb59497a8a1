#!/usr/bin/env bash
# Soak: sessions with random agent faults through two instances on one PostgreSQL server that
# is restarted twice under the load, then the database is checked: every session terminal,
# every event history gap-free and ending in its terminal event, no session the clients saw
# accepted missing.
#
#   scripts/soak.sh                     # SESSIONS=2000: the short run scripts/test.sh makes
#   SESSIONS=20000 scripts/soak.sh      # the long run README reports
#
# The PostgreSQL server is the script's own (initdb into a temporary directory, on PG_PORT,
# 55439 by default), so restarting it touches nothing else. Each instance gets half the
# sessions from its own kyc-load (CONCURRENCY clients, 50 by default); agents wait 20 ms and
# a session's deadline is 2 s, so the scripted hangs end quickly. The binaries are the debug
# ones the test suite builds (`cargo test --no-run`), as scripts/smoke.sh uses.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --no-run --quiet

sessions="${SESSIONS:-2000}"
concurrency="${CONCURRENCY:-50}"
pg_port="${PG_PORT:-55439}"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ ! -x "$pg_bin/initdb" ]; then
  echo "soak: no PostgreSQL server binaries under /usr/lib/postgresql (scripts/postgres.sh installs them)" >&2
  exit 1
fi
scratch=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  as_postgres "$pg_bin/pg_ctl" -D "$scratch/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT

# initdb and the server refuse to run as root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres:postgres "$scratch"
as_postgres "$pg_bin/initdb" -A trust -U postgres --no-sync -D "$scratch/pg" >/dev/null
cat >>"$scratch/pg/postgresql.conf" <<EOF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$scratch/pg'
max_connections = 100
EOF
pg_ctl() { as_postgres "$pg_bin/pg_ctl" -D "$scratch/pg" -l "$scratch/pg/server.log" -w "$@" >/dev/null; }
pg_ctl start
psql_q() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -At -c "$1" postgres; }

export KYC__STORE__URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
export KYC__STORE__BLOB_DIR="$scratch/blobs" KYC__STORE__HEARTBEAT_MS=500 KYC__STORE__LEASE_MS=3000
export KYC__STORE__WRITE_TIMEOUT_MS=5000 KYC__STORE__READ_TIMEOUT_MS=5000
export KYC__ORCHESTRATOR__SESSION_DEADLINE_MS=2000 KYC__AUTH__RATE_LIMIT_PER_MINUTE=0
export KYC__METRICS__LISTEN="" KYC__TELEMETRY__LEVEL=warn
key=$(target/debug/kyc-orchestrator --config config/sandbox.toml keys create --tenant soak --label soak 2>/dev/null)
for port in 18201 18202; do
  KYC__SERVER__PORT=$port target/debug/kyc-orchestrator --config config/sandbox.toml \
    >"$scratch/instance-$port.log" 2>&1 &
  pids+=($!)
done
for port in 18201 18202; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

echo "== soak: $sessions sessions with random faults, two instances, PostgreSQL restarted twice"
started=$(date +%s)
loads=()
for port in 18201 18202; do
  KYC_API_KEY="$key" target/debug/kyc-load --url "http://127.0.0.1:$port" --faults \
    --sessions $((sessions / 2)) --concurrency "$concurrency" --warmup 0 --duration 3600 \
    --latency-ms 20 --json >"$scratch/load-$port.json" &
  loads+=($!)
done
# Restart the database at about a third and two thirds of the sessions.
for third in 1 2; do
  while [ "$(psql_q "SELECT count(*) FROM sessions" 2>/dev/null || echo 0)" -lt $((sessions * third / 3)) ]; do
    sleep 0.2
    kill -0 "${loads[0]}" 2>/dev/null || kill -0 "${loads[1]}" 2>/dev/null || break
  done
  echo "restarting PostgreSQL ($(psql_q "SELECT count(*) FROM sessions") sessions stored)"
  pg_ctl -m fast restart
done
for load in "${loads[@]}"; do wait "$load"; done
echo "load done in $(( $(date +%s) - started )) s"

# Sessions still running finish within their deadline; completions the store refused are
# retried by the next heartbeat.
for _ in $(seq 1 120); do
  [ "$(psql_q "SELECT count(*) FROM sessions WHERE status <> 'completed'")" = 0 ] && break
  sleep 0.5
done

completed_by_clients=$(python3 -c '
import json, sys
total = 0
for path in sys.argv[1:]:
    total += json.load(open(path))["completed"]
print(total)' "$scratch"/load-*.json)
python3 -c '
import json, sys
for path in sys.argv[1:]:
    run = json.load(open(path))
    print(path.rsplit("/", 1)[1], "completed", run["completed"], "errors", run["errors"])' "$scratch"/load-*.json

stored=$(psql_q "SELECT count(*) FROM sessions")
unfinished=$(psql_q "SELECT count(*) FROM sessions WHERE status <> 'completed'")
gaps=$(psql_q "SELECT count(*) FROM (SELECT session_id, max(seq) AS last, count(*) AS n FROM events GROUP BY session_id) h WHERE last <> n")
no_terminal=$(psql_q "SELECT count(*) FROM sessions s WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.session_id = s.id AND e.terminal <> 0)")
after_terminal=$(psql_q "SELECT count(*) FROM events e JOIN events t ON t.session_id = e.session_id AND t.terminal <> 0 WHERE e.seq > t.seq AND (e.line::json->>'type') NOT LIKE 'review.%'")
decisions=$(psql_q "SELECT decision || ' ' || count(*) FROM sessions GROUP BY decision ORDER BY decision" | paste -sd, -)
interrupted=$(psql_q "SELECT count(*) FROM sessions WHERE reasons LIKE '%interrupted%'")
echo "stored $stored sessions ($decisions; $interrupted interrupted); completed as the clients saw it: $completed_by_clients"
echo "not terminal: $unfinished; histories with a gap: $gaps; without a terminal event: $no_terminal; events after the terminal one other than a review's: $after_terminal"

status=0
[ "$unfinished" = 0 ] || { echo "FAIL: sessions left unfinished" >&2; status=1; }
[ "$gaps" = 0 ] || { echo "FAIL: event histories with a gap" >&2; status=1; }
[ "$no_terminal" = 0 ] || { echo "FAIL: sessions without a terminal event" >&2; status=1; }
[ "$after_terminal" = 0 ] || { echo "FAIL: events after the terminal one" >&2; status=1; }
[ "$stored" -ge "$completed_by_clients" ] || { echo "FAIL: sessions the clients saw completed are missing" >&2; status=1; }
[ "$stored" -ge $((sessions / 2)) ] || { echo "FAIL: fewer than half the sessions were accepted" >&2; status=1; }
if [ "$status" -ne 0 ]; then
  for log in "$scratch"/instance-*.log; do echo "== $log" >&2; tail -n 20 "$log" >&2; done
fi
exit "$status"
