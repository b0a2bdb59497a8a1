#!/usr/bin/env bash
# Everything CI checks: formatting, lints, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/postgres.sh
scripts/models.sh
scripts/fixtures.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo nextest run --locked --no-fail-fast
scripts/lint-container.sh
scripts/smoke.sh
