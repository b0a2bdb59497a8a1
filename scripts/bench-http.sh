#!/usr/bin/env bash
# HTTP benchmarks: a release server on the sandbox plan, driven by kyc-load on the same machine.
#
#   scripts/bench-http.sh                       # every scenario below, in turn
#   scripts/bench-http.sh throughput deadline   # some of them
#   RUNS=3 scripts/bench-http.sh                # each scenario three times (README: the median)
#
# Scenarios (each starts its own server, warms it up, measures, stops it):
#   throughput  CONCURRENCY (400) closed-loop clients, agents LATENCY_MS (50) each
#   overload    2,000 clients against an admission limit of MAX_INFLIGHT (500): 503s, not collapse
#   open        open loop at RATES sessions/s (2000 ... 10000), admission limit MAX_INFLIGHT
#   health      GET /health at 100/s while CPU-bound agents (cpu_ms) keep every core busy
#   deadline    DEADLINE_CLIENTS (1000) clients whose ocr hangs; completion time minus the 1 s
#               deadline, and the server's RSS with that many sessions in flight
#   webhooks    as throughput, with a webhook endpoint (kyc-load --webhook-sink): every
#               session's message delivered, and how long after its completion
#   reviews     as throughput, every session sent to review and then decided by the client
#               (kyc-load --review), on SQLite unless STORE_URL says otherwise
#   remote      as throughput, every agent a remote one (kind "http") served by an agent server
#               (`kyc-orchestrator agent-server`) on PORT+1: the cost of four HTTP calls a session
#   real        the real agents on the default config (config/default.toml, a fresh SQLite file,
#               a stored key): CLIENTS (1 2 8) closed-loop clients in turn, each sending the drawn
#               passport photo and five selfie frames `kyc-eval inputs` writes; per-agent
#               durations, sessions/s, the server's CPU and peak RSS
#
# Environment: RUNS of each scenario (1), DURATION seconds per measurement (10), STORE_URL
# (memory:// keeping 100 completed sessions, so RSS is the sessions in flight; `sqlite` for a
# fresh SQLite file per server, the default store; sqlite://... or postgres://... to measure
# another database), MAX_INFLIGHT (500), RATES, PORT (18009), SERVER_BIN (the server binary,
# target/release/kyc-orchestrator; another build's, to compare two versions).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked --bin kyc-orchestrator --bin kyc-load --bin kyc-eval

port="${PORT:-18009}"
bin="${SERVER_BIN:-target/release/kyc-orchestrator}"
duration="${DURATION:-10}"
scratch="$(mktemp -d)"
server=""
worker=""
stop() {
  for pid in "$server" "$worker"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  server=""
  worker=""
}
trap 'stop; rm -rf "$scratch"' EXIT

# The configuration the server runs: the sandbox plan, or the default one for `real`.
config=config/sandbox.toml

# serve MAX_INFLIGHT DEADLINE_MS: a fresh server and store, and KYC_API_KEY, a test key of
# it, for kyc-load. A stored key (keys create) where the store keeps one, as a user runs it;
# memory:// keeps nothing between processes, so there the key comes from auth.bootstrap_key.
# Rate limits are off: the load generator is one key doing what many customers would.
serve() {
  stop
  rm -rf "$scratch/data"
  mkdir -p "$scratch/data"
  local store_url="${STORE_URL:-memory://}" bootstrap=""
  if [ "$store_url" = sqlite ]; then
    store_url="sqlite://$scratch/data/kyc.db"
  fi
  if [ "${store_url%%://*}" = memory ]; then
    bootstrap="kyc_test_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    KYC_API_KEY="$bootstrap"
  else
    KYC_API_KEY=$(KYC__STORE__URL="$store_url" "$bin" \
      --config "$config" keys create --tenant bench --label bench-http 2>/dev/null)
  fi
  export KYC_API_KEY
  KYC__STORE__URL="$store_url" \
  KYC__AUTH__BOOTSTRAP_KEY="$bootstrap" \
  KYC__AUTH__RATE_LIMIT_PER_MINUTE=0 \
  KYC__STORE__MEMORY_CAPACITY=100 \
  KYC__STORE__BLOB_DIR="$scratch/data/blobs" \
  KYC__SERVER__PORT="$port" \
  KYC__SERVER__MAX_INFLIGHT_SESSIONS="$1" \
  KYC__ORCHESTRATOR__SESSION_DEADLINE_MS="$2" \
  KYC__TELEMETRY__LEVEL=warn \
    "$bin" --config "$config" >"$scratch/server.log" 2>&1 &
  server=$!
  # Ready, not only alive: the real agents' models load after the server binds.
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the server did not start:" >&2
  tail -20 "$scratch/server.log" >&2
  exit 1
}

# serve_remote MAX_INFLIGHT DEADLINE_MS: an agent server with the sandbox agents on PORT+1, and
# a server whose four agents are remote ones calling it (their sandbox directives forwarded).
serve_remote() {
  stop
  local worker_port=$((port + 1)) token
  token="bench-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
  KYC__AGENT_SERVER__PORT="$worker_port" \
  KYC__AGENT_SERVER__TOKEN="$token" \
  KYC__AGENT_SERVER__MAX_INFLIGHT=20000 \
  KYC__AGENT_SERVER__METRICS_LISTEN="" \
  KYC__TELEMETRY__LEVEL=warn \
    "$bin" --config config/sandbox.toml agent-server >"$scratch/worker.log" 2>&1 &
  local started=$!
  for agent in LIVENESS DOC_CAPTURE OCR FACE_MATCH; do
    export "KYC__AGENTS__${agent}__KIND=http" \
      "KYC__AGENTS__${agent}__SETTINGS__URL=http://127.0.0.1:$worker_port" \
      "KYC__AGENTS__${agent}__SETTINGS__TOKEN=$token" \
      "KYC__AGENTS__${agent}__SETTINGS__SANDBOX=true" \
      "KYC__AGENTS__${agent}__SETTINGS__MAX_CONCURRENCY=20000"
  done
  serve "$1" "$2"
  worker=$started
  for agent in LIVENESS DOC_CAPTURE OCR FACE_MATCH; do
    unset "KYC__AGENTS__${agent}__KIND" "KYC__AGENTS__${agent}__SETTINGS__URL" \
      "KYC__AGENTS__${agent}__SETTINGS__TOKEN" "KYC__AGENTS__${agent}__SETTINGS__SANDBOX" \
      "KYC__AGENTS__${agent}__SETTINGS__MAX_CONCURRENCY"
  done
}

# User and system CPU time of a process so far, in clock ticks.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

load() {
  target/release/kyc-load --url "http://127.0.0.1:$port" --server-pid "$server" "$@"
}

# A few seconds of load first: the first sessions fault in the server's memory.
warm() {
  load --concurrency 400 --duration 3 --warmup 0 --latency-ms 50 >/dev/null
}

scenario() {
  case "$1" in
    throughput)
      serve 20000 8000 && warm
      load --concurrency "${CONCURRENCY:-400}" --duration "$duration" \
        --latency-ms "${LATENCY_MS:-50}" ;;
    overload)
      serve "${MAX_INFLIGHT:-500}" 8000 && warm
      load --concurrency 2000 --duration "$duration" --latency-ms 50 ;;
    open)
      serve "${MAX_INFLIGHT:-500}" 8000 && warm
      for rate in ${RATES:-2000 4000 6000 8000 10000}; do
        load --rate "$rate" --duration "$duration" --latency-ms 50
        echo
      done ;;
    health)
      serve 20000 8000
      load --concurrency 16 --duration "$duration" --latency-ms 0 --cpu-ms 20 --health-rate 100 ;;
    deadline)
      serve 20000 1000
      load --concurrency "${DEADLINE_CLIENTS:-1000}" --duration "$duration" --warmup 2 \
        --latency-ms 50 --hang ocr --deadline-ms 1000 ;;
    webhooks)
      serve 20000 8000 && warm
      load --concurrency "${CONCURRENCY:-400}" --duration "$duration" \
        --latency-ms "${LATENCY_MS:-50}" --webhook-sink ;;
    reviews)
      # A store that keeps every session: memory:// keeps 100, and decisions follow completions.
      STORE_URL="${STORE_URL:-sqlite}" serve 20000 8000 && warm
      load --concurrency "${CONCURRENCY:-400}" --duration "$duration" \
        --latency-ms "${LATENCY_MS:-50}" --review ;;
    remote)
      serve_remote 20000 8000 && warm
      local ticks started
      ticks=$(cpu_ticks "$worker")
      started=$(date +%s%N)
      load --concurrency "${CONCURRENCY:-400}" --duration "$duration" \
        --latency-ms "${LATENCY_MS:-50}"
      ticks=$(( $(cpu_ticks "$worker") - ticks ))
      echo "agent server CPU: $(( ticks * 100 * 1000000000 / $(getconf CLK_TCK) / ($(date +%s%N) - started) )) % of a core over the whole load run"
      ;;
    real)
      target/release/kyc-eval inputs "$scratch/inputs" >/dev/null
      local inputs=(--document "$scratch/inputs/document.jpg" --selfie "$scratch/inputs"/selfie-*.jpg)
      config=config/default.toml STORE_URL="${STORE_URL:-sqlite}" serve 20000 8000
      load --concurrency 2 --duration 5 --warmup 0 "${inputs[@]}" >/dev/null
      for clients in ${CLIENTS:-1 2 8}; do
        load --concurrency "$clients" --duration "$duration" --warmup 2 "${inputs[@]}"
        echo
      done ;;
    *)
      echo "unknown scenario: $1 (throughput, overload, open, health, deadline, webhooks, reviews, remote, real)" >&2
      exit 2 ;;
  esac
}

for name in ${@:-throughput overload open health deadline}; do
  for run in $(seq 1 "${RUNS:-1}"); do
    echo "== $name (run $run of ${RUNS:-1})"
    scenario "$name"
    echo
  done
done
