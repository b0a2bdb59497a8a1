#!/usr/bin/env bash
# HTTP benchmark: starts a release server and drives it with kyc-load, closed loop, at each
# concurrency level. Environment: CONCURRENCY (default "1 100 1000"), DURATION seconds (10),
# LATENCY_MS per sandbox agent (50), PORT (18009), STORE_URL (default: a new SQLite file in a
# temporary directory; postgres://... or memory:// to compare backends).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked --bins

port="${PORT:-18009}"
scratch="$(mktemp -d)"
KYC__STORE__URL="${STORE_URL:-sqlite://$scratch/kyc.db}" \
KYC__STORE__BLOB_DIR="$scratch/blobs" \
KYC__SERVER__PORT="$port" \
KYC__SERVER__MAX_INFLIGHT_SESSIONS=20000 \
KYC__TELEMETRY__LEVEL=warn \
  target/release/kyc-orchestrator --config config/sandbox.toml >/tmp/kyc-bench-server.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$scratch"' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done

for c in ${CONCURRENCY:-1 100 1000}; do
  echo "== concurrency $c"
  target/release/kyc-load --url "http://127.0.0.1:$port" --concurrency "$c" \
    --duration "${DURATION:-10}" --latency-ms "${LATENCY_MS:-50}" --server-pid "$server"
done
