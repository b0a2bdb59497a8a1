#!/usr/bin/env bash
# Remote agents against in-process ones, on the real agents: the same release server and the
# same inputs (`kyc-eval inputs`: the drawn passport photo and five selfie frames), driven by
# kyc-load on the same machine, in three layouts:
#
#   local    every agent in the API process (the default plan)
#   remote   every agent on one agent server (`kyc-orchestrator agent-server`), each a remote
#            (`kind = "http"`) agent of the API process
#   split    two agent servers: liveness and face_match on one, doc_capture and ocr on the other
#
#   scripts/bench-remote.sh                  # every layout, at CLIENTS (1 2) clients each
#   CLIENTS="1" scripts/bench-remote.sh local remote
#
# Environment: CLIENTS, DURATION seconds per measurement (15), PORT (18009; agent servers on
# PORT+1 and PORT+2), STORE_URL (`sqlite`, a fresh file per server: the default store, with a
# stored key). The API server's CPU is what kyc-load reports; each agent server's is printed
# after it, so that the total is the sum.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/models.sh
cargo build --release --locked --bin kyc-orchestrator --bin kyc-load --bin kyc-eval

port="${PORT:-18009}"
bin=target/release/kyc-orchestrator
duration="${DURATION:-15}"
scratch="$(mktemp -d)"
pids=()
stop() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop; rm -rf "$scratch"' EXIT
target/release/kyc-eval inputs "$scratch/inputs" >/dev/null
token="bench-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"

# ready URL: waits until a readiness route answers 200 (the models have loaded).
ready() {
  for _ in $(seq 1 600); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2
  exit 1
}

# worker PORT AGENTS: an agent server serving AGENTS (comma-separated).
worker() {
  KYC__AGENT_SERVER__PORT="$1" KYC__AGENT_SERVER__TOKEN="$token" \
  KYC__AGENT_SERVER__METRICS_LISTEN="" KYC__TELEMETRY__LEVEL=warn \
    "$bin" agent-server --agents "$2" >"$scratch/worker-$1.log" 2>&1 &
  pids+=($!)
  ready "http://127.0.0.1:$1/health/ready"
}

# remote AGENT PORT: the API's AGENT calls the agent server on PORT.
remote() {
  local name="${1^^}"
  export "KYC__AGENTS__${name}__KIND=http" \
    "KYC__AGENTS__${name}__SETTINGS__URL=http://127.0.0.1:$2" \
    "KYC__AGENTS__${name}__SETTINGS__TOKEN=$token"
}

# api: the API server on the default config (SQLite and a stored key unless STORE_URL says).
api() {
  rm -rf "$scratch/data"
  mkdir -p "$scratch/data"
  local store_url="${STORE_URL:-sqlite}"
  [ "$store_url" = sqlite ] && store_url="sqlite://$scratch/data/kyc.db"
  export KYC__STORE__URL="$store_url" KYC__STORE__BLOB_DIR="$scratch/data/blobs"
  KYC_API_KEY=$("$bin" keys create --tenant bench --label bench-remote 2>/dev/null)
  export KYC_API_KEY
  KYC__SERVER__PORT="$port" KYC__AUTH__RATE_LIMIT_PER_MINUTE=0 KYC__METRICS__LISTEN="" \
  KYC__TELEMETRY__LEVEL=warn "$bin" >"$scratch/api.log" 2>&1 &
  api_pid=$!
  pids+=("$api_pid")
  ready "http://127.0.0.1:$port/health/ready"
}

cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

measure() {
  local clients="$1" started workers=("${pids[@]:0:${#pids[@]}-1}") before=()
  for pid in "${workers[@]}"; do before+=("$(cpu_ticks "$pid")"); done
  started=$(date +%s%N)
  target/release/kyc-load --url "http://127.0.0.1:$port" --server-pid "$api_pid" \
    --concurrency "$clients" --duration "$duration" \
    --document "$scratch/inputs/document.jpg" --selfie "$scratch/inputs"/selfie-*.jpg
  local elapsed=$(( $(date +%s%N) - started )) i=0
  for pid in "${workers[@]}"; do
    local ticks=$(( $(cpu_ticks "$pid") - before[i] ))
    echo "agent server $pid CPU: $(( ticks * 100 * 1000000000 / $(getconf CLK_TCK) / elapsed )) % of a core over the run"
    i=$((i + 1))
  done
}

for layout in ${@:-local remote split}; do
  for clients in ${CLIENTS:-1 2}; do
    echo "== $layout, $clients client(s)"
    stop
    for agent in liveness doc_capture ocr face_match; do
      unset "KYC__AGENTS__${agent^^}__KIND" "KYC__AGENTS__${agent^^}__SETTINGS__URL" \
        "KYC__AGENTS__${agent^^}__SETTINGS__TOKEN"
    done
    case "$layout" in
      local) ;;
      remote)
        worker $((port + 1)) liveness,doc_capture,ocr,face_match
        for agent in liveness doc_capture ocr face_match; do remote "$agent" $((port + 1)); done ;;
      split)
        worker $((port + 1)) liveness,face_match
        worker $((port + 2)) doc_capture,ocr
        remote liveness $((port + 1)); remote face_match $((port + 1))
        remote doc_capture $((port + 2)); remote ocr $((port + 2)) ;;
      *) echo "unknown layout: $layout (local, remote, split)" >&2; exit 2 ;;
    esac
    api
    measure "$clients"
    echo
  done
done
