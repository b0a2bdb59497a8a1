#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests: starts the one that is
# installed, or installs Debian's and starts it. Idempotent. The tests connect as
# postgres:postgres (KYC_TEST_POSTGRES overrides the server URL).
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "postgres: installing Debian's PostgreSQL server"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql
  installed=1
fi

if ! ready; then
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  echo "postgres: starting cluster $version/main"
  $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

if ! ready; then
  echo "postgres: no server answers on 127.0.0.1:5432" >&2
  exit 1
fi

if [ "${installed:-0}" = 1 ]; then
  # A fresh install asks for a password over TCP: give the tests' user one.
  $sudo -u postgres psql -q -c "ALTER USER postgres PASSWORD 'postgres'" 2>/dev/null \
    || su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
fi
echo "postgres: ready on 127.0.0.1:5432"

# Databases the tests created in earlier runs.
export PGPASSWORD=postgres
psql -q -h 127.0.0.1 -U postgres -d postgres -Atc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'kyc\_test\_%'" \
  | while read -r db; do psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE \"$db\""; done
