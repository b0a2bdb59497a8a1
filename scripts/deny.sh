#!/usr/bin/env bash
# Holds the dependency tree to deny.toml with cargo-deny (scripts/tools.sh puts it in
# target/tools/): advisories (known vulnerabilities, unmaintained and unsound crates), licences,
# bans (duplicates, wildcards) and sources (crates.io only). Any finding fails. Called by
# scripts/test.sh.
#
# The advisories come from the RustSec database, a git repository fetched anew for every run.
# Where it cannot be fetched within FETCH_SECONDS (a machine that reaches package registries and
# nothing else), the advisories check is skipped, saying so and why, and the other three run:
# an unreachable database must not fail the run, nor let it hang.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh
export PATH="$PWD/target/tools:$PATH"

FETCH_SECONDS=${FETCH_SECONDS:-60}
deny=(cargo deny --locked)
# The inclusion graphs of the duplicate warnings run to hundreds of lines;
# `cargo deny check bans` without this flag prints them.
check=(check --hide-inclusion-graph)

status=0
fetch_log=$(timeout --kill-after=5 "$FETCH_SECONDS" "${deny[@]}" fetch db 2>&1) || status=$?
if [ "$status" -eq 0 ]; then
  # Offline: the database was just fetched, and the check must not fetch it again unbounded.
  "${deny[@]}" --offline "${check[@]}" advisories licenses bans sources
else
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    why="no answer within ${FETCH_SECONDS} s"
  else
    why=$(grep -v '^\s*$' <<<"$fetch_log" | tail -n 1)
  fi
  echo "deny: advisories SKIPPED: the RustSec advisory database could not be fetched ($why)."
  echo "deny: checking licenses, bans and sources only."
  "${deny[@]}" "${check[@]}" licenses bans sources
fi
