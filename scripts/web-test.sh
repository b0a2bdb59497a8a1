#!/usr/bin/env bash
# The pages' tests: Playwright (playwright-core, from npm, pinned in web/tests/package-lock.json)
# driving Debian's Chromium headless against the service from the test build
# (target/debug/kyc-orchestrator, or SERVER_BIN). Screenshots go to target/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
server="${SERVER_BIN:-target/debug/kyc-orchestrator}"
if [ ! -x "$server" ]; then
  echo "web-test: $server is missing; build it first (cargo build --bin kyc-orchestrator)" >&2
  exit 1
fi
npm ci --prefix web/tests --no-audit --no-fund --loglevel=error
cd web/tests
node --test --test-concurrency=1 --test-reporter=spec
