#!/usr/bin/env bash
# Smoke test of the service binary, as an operator would run it: creates a test key with
# `kyc-orchestrator keys create` in a fresh SQLite store, starts the service on port 8009 with
# each profile (all sandbox agents; the default plan with the real agents; the same with
# liveness, ocr and face_match on an agent server, `workers`), runs kyc-smoke against it with
# the key, and stops it with SIGTERM. The same kyc-smoke runs in compose.smoke.yml against the
# container. Needs the models (scripts/models.sh).
#
# It runs the binaries the test suite builds into target/debug (dependencies optimised, see
# Cargo.toml); `cargo test --no-run` builds them with the test suite's features, so right after
# the tests it has nothing to do. A release build, or a plain `cargo build` (whose features
# differ without the dev-dependencies), would compile every dependency again.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --no-run --quiet

scratch=$(mktemp -d)
server=""
worker=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; [ -n "$worker" ] && kill "$worker" 2>/dev/null; rm -rf "$scratch"' EXIT

for profile in sandbox default workers; do
  echo "== smoke: $profile profile"
  config=()
  [ "$profile" = sandbox ] && config=(--config config/sandbox.toml)
  if [ "$profile" != sandbox ]; then
    # The smoke test checks what the real agents find, not how fast: on these debug-profile
    # binaries, on a busy machine, ocr's read of the drawn card comes near its 4 s timeout (a
    # timeout would be a review, not the finding the check expects). Speed is measured by the
    # benchmarks (README, Performance), on release builds.
    export KYC__ORCHESTRATOR__SESSION_DEADLINE_MS=25000
    for agent in LIVENESS DOC_CAPTURE OCR FACE_MATCH; do
      export "KYC__AGENTS__${agent}__TIMEOUT_MS=20000"
    done
  fi
  if [ "$profile" = workers ]; then
    # The agents doc_capture hands its rectified document to run on an agent server: what
    # crosses the wire is what the checks read.
    export KYC__AGENT_SERVER__TOKEN="smoke-worker-token"
    target/debug/kyc-orchestrator agent-server --agents liveness,ocr,face_match \
      >"$scratch/worker.log" 2>&1 &
    worker=$!
    for agent in LIVENESS OCR FACE_MATCH; do
      export "KYC__AGENTS__${agent}__KIND=http" \
        "KYC__AGENTS__${agent}__SETTINGS__URL=http://127.0.0.1:8010" \
        "KYC__AGENTS__${agent}__SETTINGS__TOKEN=$KYC__AGENT_SERVER__TOKEN"
    done
    # The container's probe, `health`, waits for it here: 0 once it is ready.
    for _ in $(seq 1 300); do
      target/debug/kyc-orchestrator health --ready --url http://127.0.0.1:8010 2>/dev/null && break
      sleep 0.1
    done
  fi
  export KYC__STORE__URL="sqlite://$scratch/$profile.db" KYC__STORE__BLOB_DIR="$scratch/blobs-$profile"
  KYC_API_KEY=$(target/debug/kyc-orchestrator "${config[@]}" keys create --tenant smoke --label smoke)
  export KYC_API_KEY
  target/debug/kyc-orchestrator "${config[@]}" >"$scratch/$profile.log" 2>&1 &
  server=$!
  # The workers run the default plan's agents: the same findings are expected.
  expect=(--profile "$profile")
  [ "$profile" = workers ] && expect=(--profile default --remote liveness,ocr,face_match)
  if ! target/debug/kyc-smoke run --url http://127.0.0.1:8009 "${expect[@]}"; then
    echo "== the server's last log lines:" >&2
    tail -n 40 "$scratch/$profile.log" >&2
    if [ -n "$worker" ]; then
      echo "== the agent server's last log lines:" >&2
      tail -n 40 "$scratch/worker.log" >&2
    fi
    exit 1
  fi
  target/debug/kyc-orchestrator health
  kill -TERM "$server"
  wait "$server"
  server=""
  if target/debug/kyc-orchestrator health 2>/dev/null; then
    echo "== kyc-orchestrator health answered 0 with the instance stopped" >&2
    exit 1
  fi
  if [ -n "$worker" ]; then
    kill -TERM "$worker"
    wait "$worker"
    worker=""
  fi
done
