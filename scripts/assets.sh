#!/usr/bin/env bash
# Puts the script of the API reference page (GET /docs) into assets/ (git-ignored): Redoc's
# standalone bundle from the npm registry's `redoc` 3.0.1 package (MIT licence, kept beside it),
# checked against scripts/assets.sha256, so the page works offline and nothing is fetched from
# a CDN at run time. Does nothing when the files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=assets
sums=scripts/assets.sha256
tarball=https://registry.npmjs.org/redoc/-/redoc-3.0.1.tgz

if (cd "$dest" 2>/dev/null && grep -v ' redoc-' "../$sums" | sha256sum --check --quiet --status); then
  exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "assets.sh: fetching $tarball"
curl -fsSL --retry 3 -o "$scratch/redoc.tgz" "$tarball"
(cd "$scratch" && grep ' redoc-3.0.1.tgz$' "$OLDPWD/$sums" | sed 's/redoc-3.0.1.tgz$/redoc.tgz/' |
  sha256sum --check --quiet)
tar -xzf "$scratch/redoc.tgz" -C "$scratch" package/bundles/redoc.standalone.js package/LICENSE
mkdir -p "$dest"
cp "$scratch/package/bundles/redoc.standalone.js" "$dest/redoc.standalone.js"
cp "$scratch/package/LICENSE" "$dest/redoc.LICENSE"
(cd "$dest" && grep -v ' redoc-' "../$sums" | sha256sum --check --quiet)
echo "assets: ready in $dest/"
