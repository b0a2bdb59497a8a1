#!/usr/bin/env bash
# Smoke test of the service binary, as an operator would run it: creates a test key with
# `kyc-orchestrator keys create` in a fresh SQLite store, starts the service on port 8009 with
# each profile (all sandbox agents; the default plan with the real agents), runs kyc-smoke
# against it with the key, and stops it with SIGTERM. The same kyc-smoke runs in
# compose.smoke.yml against the container. Needs the models (scripts/models.sh).
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
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$scratch"' EXIT

for profile in sandbox default; do
  echo "== smoke: $profile profile"
  config=()
  [ "$profile" = sandbox ] && config=(--config config/sandbox.toml)
  if [ "$profile" = default ]; then
    # The smoke test checks what the real agents find, not how fast: on these debug-profile
    # binaries, on a busy machine, ocr's read of the drawn card comes near its 4 s timeout (a
    # timeout would be a review, not the finding the check expects). Speed is measured by the
    # benchmarks (README, Performance), on release builds.
    export KYC__ORCHESTRATOR__SESSION_DEADLINE_MS=25000
    for agent in LIVENESS DOC_CAPTURE OCR FACE_MATCH; do
      export "KYC__AGENTS__${agent}__TIMEOUT_MS=20000"
    done
  fi
  export KYC__STORE__URL="sqlite://$scratch/$profile.db" KYC__STORE__BLOB_DIR="$scratch/blobs-$profile"
  KYC_API_KEY=$(target/debug/kyc-orchestrator "${config[@]}" keys create --tenant smoke --label smoke)
  export KYC_API_KEY
  target/debug/kyc-orchestrator "${config[@]}" >"$scratch/$profile.log" 2>&1 &
  server=$!
  if ! target/debug/kyc-smoke run --url http://127.0.0.1:8009 --profile "$profile"; then
    echo "== the server's last log lines:" >&2
    tail -n 40 "$scratch/$profile.log" >&2
    exit 1
  fi
  kill -TERM "$server"
  wait "$server"
  server=""
done
