#!/usr/bin/env bash
# Fuzzes the running service from its own OpenAPI document with schemathesis (PyPI, pinned
# with hashes in scripts/fuzz-requirements.txt): generated requests to every operation, with a
# test key, and every answer checked against the document (status, content type, schema,
# headers) and for server errors. Bounded: MAX_EXAMPLES per operation (25). Then
# scripts/check_events.py checks every line of the event streams against the document.
#
# Two checks are left out, for what the API means on purpose:
# - positive_data_acceptance: a request the schema allows must succeed. A schema cannot say
#   "a decodable JPEG", so generated images are refused (422 not_an_image), rightly.
# - use_after_free: a deleted resource must be gone. DELETE /v1/sessions/{id} erases a
#   session's images and personal data and keeps its decision on record (README, "Erasure and
#   retention"), so the session is still readable after it.
#
# It runs the binary the test suite builds (target/debug, see scripts/smoke.sh) on the sandbox
# profile with a fresh SQLite store and a 2 s session deadline, so scripted agent latencies
# cannot hold a stream open for long.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --no-run --quiet

venv="$PWD/target/tools/schemathesis"
if [ ! -x "$venv/bin/schemathesis" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
    -r scripts/fuzz-requirements.txt
fi

port="${PORT:-18019}"
scratch=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$scratch"' EXIT
export KYC__STORE__URL="sqlite://$scratch/kyc.db" KYC__STORE__BLOB_DIR="$scratch/blobs" \
  KYC__SERVER__PORT="$port" KYC__METRICS__LISTEN="" KYC__AUTH__RATE_LIMIT_PER_MINUTE=0 \
  KYC__ORCHESTRATOR__SESSION_DEADLINE_MS=2000
key=$(target/debug/kyc-orchestrator --config config/sandbox.toml keys create --tenant fuzz 2>/dev/null)
target/debug/kyc-orchestrator --config config/sandbox.toml >"$scratch/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done

status=0
# From the scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
(cd "$scratch" && "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --exclude-checks positive_data_acceptance,use_after_free \
  --max-examples "${MAX_EXAMPLES:-25}" \
  --request-timeout 10 \
  --seed "${SEED:-20261130}" \
  --no-color) || status=$?
# The NDJSON streams, line by line, against the document's Event schema.
"$venv/bin/python" scripts/check_events.py "http://127.0.0.1:$port" "$key" || status=1
if [ "$status" -ne 0 ]; then
  echo "== the server's last log lines:" >&2
  tail -n 30 "$scratch/server.log" >&2
fi
exit "$status"
