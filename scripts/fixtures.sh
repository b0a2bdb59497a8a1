#!/usr/bin/env bash
# Puts the test fixtures that come from registry packages into fixtures/ (git-ignored), checked
# against scripts/fixtures.sha256. Everything else the tests use, they render themselves.
#
#   astronaut.png     PyPI scikit-image 0.26.0, skimage/data/astronaut.png: Eileen Collins,
#                     NASA portrait, public domain. The face on generated documents and selfies.
#   grace_hopper.jpg  PyPI matplotlib 3.11.2, matplotlib/mpl-data/sample_data/grace_hopper.jpg:
#                     Grace Hopper, U.S. Navy portrait, public domain. The other person.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/wheels.sh

dest=fixtures
sums=scripts/fixtures.sha256
wheel_files_ok "$dest" "$sums" && exit 0
wheel_files "$dest" "$sums" scikit-image==0.26.0 matplotlib==3.11.2 -- \
  skimage/data/astronaut.png \
  matplotlib/mpl-data/sample_data/grace_hopper.jpg
wheel_files_verify "$dest" "$sums"
echo "fixtures: ready in $dest/"
