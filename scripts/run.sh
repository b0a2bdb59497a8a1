#!/usr/bin/env bash
# Runs the service on its embedded defaults (port 8009). Extra arguments go to the binary,
# e.g. scripts/run.sh --config config/production.toml. It builds `kyc`, the command-line
# client, beside it (target/release/kyc).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/models.sh
scripts/assets.sh
cargo build --release --locked --bin kyc-orchestrator --bin kyc
exec target/release/kyc-orchestrator "$@"
