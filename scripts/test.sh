#!/usr/bin/env bash
# Everything CI checks: formatting, dependencies, lints, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/postgres.sh
scripts/models.sh
scripts/fixtures.sh
cargo fmt --all -- --check
# Advisories, licences, duplicate and banned crates, sources (deny.toml).
scripts/deny.sh
# The lints, the tests and the smoke test's binaries all use the test profile, so build
# scripts (dlib's C++ wrapper among them) and proc macros are compiled once, not per profile.
cargo clippy --locked --all-targets --profile test -- -D warnings
cargo nextest run --locked --no-fail-fast
scripts/lint-container.sh
scripts/smoke.sh
