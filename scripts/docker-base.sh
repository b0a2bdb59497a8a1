#!/usr/bin/env bash
# Makes the base images the Dockerfile and compose.smoke.yml build on, for a build host that
# reaches Debian's package archive but no image registry (an air-gapped bank network with a
# Debian mirror, say):
#
#   debian:bookworm-slim    debootstrap's minimal Debian 12, trimmed the way the registry's
#                           slim image is (no manuals, no documentation, no apt lists)
#   rust:1.95-slim-bookworm that, plus gcc and the Rust 1.95 toolchain installed on this host
#   postgres:15-bookworm    that, plus Debian's PostgreSQL 15, with an entrypoint that reads
#                           POSTGRES_PASSWORD and POSTGRES_DB as the registry's image does
#
# The Dockerfile and the compose file name these images pinned by digest; a digest belongs to
# the registry's copy, so images made here carry the tag alone, and scripts/docker-smoke.sh
# passes the tags as build arguments (KYC_BASE=local). The Dockerfile itself is unchanged.
#
# Extra CA certificates of this host (/usr/local/share/ca-certificates/*.crt: an egress proxy's
# or a company's own) go into the Rust image, so that the build stages' pip, cargo and curl
# trust what the host trusts. The Debian image, which the service image is made from, does not
# get them: a build host's trust is not the product's. The Dockerfile never names them.
#
#   scripts/docker-base.sh              make whichever of the three are missing
#   scripts/docker-base.sh --rebuild    make all three again
#
# Needs root (debootstrap), Debian's debootstrap package, a running Docker engine, and Rust 1.95
# as the toolchain `rustc` runs here (`rustup default 1.95`). DEBIAN_MIRROR overrides the archive.
set -euo pipefail
cd "$(dirname "$0")/.."

rebuild=false
[ "${1:-}" = "--rebuild" ] && rebuild=true
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rust_version=1.95
work=target/docker-base

have() { ! $rebuild && docker image inspect "$1" >/dev/null 2>&1; }
say() { echo "docker-base: $*"; }

if ! docker info >/dev/null 2>&1; then
  echo "docker-base: no Docker engine answers (docker info failed); nothing made" >&2
  exit 1
fi
command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap
mkdir -p "$work"

extra_certs() {
  local dest=$1
  mkdir -p "$dest"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$dest/"
  fi
}

if ! have debian:bookworm-slim; then
  say "debootstrap bookworm from $mirror"
  rootfs=$work/rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log"
  # What the registry's slim image leaves out, also for packages installed later.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo "deb $mirror bookworm main" >"$rootfs/etc/apt/sources.list"
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -c . \
    | docker import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
  say "made debian:bookworm-slim"
fi

if ! have "rust:$rust_version-slim-bookworm"; then
  toolchain_dir=$(rustc --print sysroot)
  case $(rustc --version) in
    "rustc $rust_version."*) ;;
    *) echo "docker-base: the installed toolchain is not Rust $rust_version" >&2; exit 1 ;;
  esac
  say "rust:$rust_version-slim-bookworm from $toolchain_dir"
  context=$work/rust
  rm -rf "$context"
  mkdir -p "$context/toolchain"
  # The toolchain without its HTML documentation (about 800 MB).
  tar -C "$toolchain_dir" --exclude=./share/doc -c . | tar -C "$context/toolchain" -x
  extra_certs "$context/certs"
  docker build --quiet -t "rust:$rust_version-slim-bookworm" -f - "$context" >/dev/null <<'EOF'
FROM debian:bookworm-slim
# What the registry's slim Rust image installs: a C compiler and linker, libc's headers and the
# CA certificates, which take in the host's extra ones from /usr/local/share/ca-certificates.
COPY certs /usr/local/share/ca-certificates
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rustup/toolchain
RUN mkdir -p /usr/local/cargo/bin \
 && for tool in /usr/local/rustup/toolchain/bin/*; do ln -s "$tool" /usr/local/cargo/bin/; done
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
  rm -rf "$context"
  say "made rust:$rust_version-slim-bookworm"
fi

if ! have postgres:15-bookworm; then
  say "postgres:15-bookworm from Debian's postgresql-15"
  context=$work/postgres
  rm -rf "$context"
  mkdir -p "$context"
  cat >"$context/entrypoint.sh" <<'EOF'
#!/bin/sh
# Starts PostgreSQL 15 on $PGDATA, first making the cluster if there is none: the superuser
# postgres with POSTGRES_PASSWORD, the database POSTGRES_DB, password logins from anywhere.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  initdb --username=postgres --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256 \
    -D "$PGDATA" >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB";
SQL
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
EOF
  chmod +x "$context/entrypoint.sh"
  docker build --quiet -t postgres:15-bookworm -f - "$context" >/dev/null <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
EOF
  rm -rf "$context"
  say "made postgres:15-bookworm"
fi
say "debian:bookworm-slim, rust:$rust_version-slim-bookworm and postgres:15-bookworm are here"
