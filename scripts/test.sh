#!/usr/bin/env bash
# Everything CI checks: formatting, dependencies, lints and the whole test suite.
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
# The lints ride on the test build. For this workspace's own crates cargo runs clippy-driver
# in place of rustc, as `cargo clippy` does, but building instead of only checking: every
# dependency is compiled once, for the tests, and not a second time in check mode for the lints.
# Every target is linted: the library with and without its unit tests, the binaries, the
# integration tests, and the benches (built after the tests, not run). The smoke, soak and fuzz steps below
# build with the same settings, so they reuse these artifacts. The docs' own check
# (scripts/docs.sh) is left out: it would compile every dependency in check mode once more.
# Incremental compilation only slows a build from scratch (measured: 235 s against 210 s for
# this crate's targets); CI always builds from scratch.
export CARGO_INCREMENTAL=0
export RUSTC_WORKSPACE_WRAPPER=clippy-driver
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo nextest run --locked --no-fail-fast
cargo build --locked --profile test --benches
scripts/lint-container.sh
scripts/smoke.sh
# The capture page in Chromium, through Playwright (README, "Hosted capture").
scripts/web-test.sh
# 2,000 sessions with random faults while PostgreSQL restarts twice (README, "Operating it").
scripts/soak.sh
scripts/fuzz.sh
