#!/usr/bin/env bash
# Builds the images and runs compose.smoke.yml's three stacks against them, each to its
# runner's verdict:
#
#   single   one instance on SQLite, the image's defaults
#   cluster  two instances on one PostgreSQL; a session started on one is followed live on the
#            other, then each is checked in full
#   workers  one API instance whose liveness, ocr and face_match run on two agent workers
#
# and checks that the service image stays lean (at most MAX_IMAGE_MB, 450 by default) and that
# its containers ran read-only, as user 10001, with no capabilities.
#
#   scripts/docker-smoke.sh                      bases pulled from the registry, by digest
#   KYC_BASE=local scripts/docker-smoke.sh       bases made here by scripts/docker-base.sh
#   STACKS="single cluster" scripts/docker-smoke.sh
#
# Where no Docker engine answers it says so and exits 0: CI machines have none, and the
# container set-up is checked there by scripts/lint-container.sh alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "docker-smoke: SKIPPED, no Docker engine answers here (docker info failed)"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  # Compose v1 honours deploy.replicas (the workers profile's two agent servers) only in its
  # compatibility mode.
  compose=(docker-compose --compatibility)
else
  echo "docker-smoke: neither 'docker compose' nor docker-compose is installed" >&2
  exit 1
fi

build_args=()
case ${KYC_BASE:-registry} in
  registry) ;;
  local)
    scripts/docker-base.sh
    build_args=(--build-arg RUST_IMAGE=rust:1.95-slim-bookworm
      --build-arg DEBIAN_IMAGE=debian:bookworm-slim)
    export POSTGRES_IMAGE=postgres:15-bookworm
    ;;
  *) echo "docker-smoke: KYC_BASE is registry or local" >&2; exit 2 ;;
esac

echo "docker-smoke: building kyc-orchestrator and kyc-orchestrator-smoke"
docker build --quiet "${build_args[@]}" --target service -t kyc-orchestrator . >/dev/null
docker build --quiet "${build_args[@]}" --target smoke -t kyc-orchestrator-smoke . >/dev/null

failed=()
size=$(docker image inspect --format '{{.Size}}' kyc-orchestrator)
size_mb=$((size / 1000000))
max_mb=${MAX_IMAGE_MB:-450}
if [ "$size_mb" -le "$max_mb" ]; then
  echo "ok    the service image is $size_mb MB (at most $max_mb)"
else
  echo "FAIL  the service image is $size_mb MB, over $max_mb"
  failed+=(size)
fi

# How a container of the service image ran: read-only, user 10001, every capability dropped.
hardened() {
  local container=$1 shape
  shape=$(docker inspect --format \
    '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{join .HostConfig.CapDrop ","}}' \
    "$container")
  if [ "$shape" = "true 10001 ALL" ]; then
    echo "ok    $container ran read-only as 10001 with no capabilities"
  else
    echo "FAIL  $container ran as '$shape', not 'true 10001 ALL'"
    return 1
  fi
}

stack() {
  local name=$1 runner=$2
  shift 2
  local project=kyc-smoke-$name
  local run=("${compose[@]}" --ansi never -p "$project" -f compose.smoke.yml)
  [ "$name" = single ] || run+=(--profile "$name")
  echo "docker-smoke: $name"
  local status=0
  "${run[@]}" up --no-build --abort-on-container-exit --exit-code-from "$runner" "$runner" "$@" \
    >"target/docker-smoke-$name.log" 2>&1 || status=$?
  grep -E "^$runner[-_0-9]* +\| (ok|FAIL|  got|all checks)" "target/docker-smoke-$name.log" \
    | sed -E 's/^[^|]*\| /      /' || true
  for service in "$@"; do
    for container in $(docker ps -aq --filter "label=com.docker.compose.project=$project" \
      --filter "label=com.docker.compose.service=$service"); do
      [ "$(docker inspect --format '{{.Config.Image}}' "$container")" = kyc-orchestrator ] || continue
      hardened "$(docker inspect --format '{{.Name}}' "$container" | tr -d /)" || status=1
    done
  done
  "${run[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true
  if [ "$status" -eq 0 ]; then
    echo "ok    $name: every check passed"
  else
    echo "FAIL  $name (the whole run is in target/docker-smoke-$name.log)"
    failed+=("$name")
  fi
}

mkdir -p target
for name in ${STACKS:-single cluster workers}; do
  case $name in
    single) stack single smoke kyc ;;
    cluster) stack cluster smoke-cluster postgres kyc-a kyc-b ;;
    workers) stack workers smoke-workers agents kyc-api ;;
    *) echo "docker-smoke: no stack '$name' (single, cluster, workers)" >&2; exit 2 ;;
  esac
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "docker-smoke: FAILED: ${failed[*]}"
  exit 1
fi
echo "docker-smoke: all passed"
