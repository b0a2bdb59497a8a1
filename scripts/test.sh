#!/usr/bin/env bash
# Everything CI checks: formatting, dependencies, lints, docs, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/postgres.sh
scripts/models.sh
scripts/fixtures.sh
scripts/assets.sh
cargo fmt --all -- --check
# Advisories, licences, duplicate and banned crates, sources (deny.toml).
scripts/deny.sh
# The lints, the docs, the tests and the smoke test's binaries all use the test profile, so build
# scripts (dlib's C++ wrapper among them) and proc macros are compiled once, not per profile.
cargo clippy --locked --all-targets --profile test -- -D warnings
# The docs, with every rustdoc warning (a broken intra-doc link, say) an error. Without the
# dev-dependencies' features tokio and the crates built on it are checked once more, once per
# target directory; every other dependency's metadata is clippy's.
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --profile test
cargo nextest run --locked --no-fail-fast
scripts/lint-container.sh
scripts/smoke.sh
# 2,000 sessions with random faults while PostgreSQL restarts twice (README, "Operating it").
scripts/soak.sh
scripts/fuzz.sh
