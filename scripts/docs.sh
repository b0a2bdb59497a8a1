#!/usr/bin/env bash
# Builds the API docs with every rustdoc warning an error (a broken intra-doc link, say). Run it
# after changing doc comments; scripts/test.sh leaves it out because it compiles every
# dependency once more, in check mode. The docs land in target/doc/kyc_orchestrator/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
