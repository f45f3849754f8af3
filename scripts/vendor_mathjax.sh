#!/usr/bin/env bash
# Vendor the minimum of MathJax 3 that the book needs into book/_static/mathjax/,
# so that math renders without any third-party request (offline classrooms, the
# browser test). Reproducible: fetches a pinned version from the npm registry.
#
#   tex-chtml-full.js            TeX input (all TeX packages built in, so the autoloader
#                                never fetches an extension) + CommonHTML output + menu
#   output/chtml/fonts/woff-v2/  the CommonHTML fonts that tex-chtml-full.js loads
#                                relative to its own URL
#   LICENSE                      Apache-2.0
#
# Usage: scripts/vendor_mathjax.sh            (needs npm and network access to the registry)
set -euo pipefail
VERSION="${MATHJAX_VERSION:-3.2.2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/book/_static/mathjax"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "mathjax@$VERSION" >/dev/null && tar xzf mathjax-"$VERSION".tgz)
src="$tmp/package"

rm -rf "$dest"
mkdir -p "$dest/output/chtml/fonts/woff-v2"
cp "$src/es5/tex-chtml-full.js" "$dest/"
cp "$src"/es5/output/chtml/fonts/woff-v2/*.woff "$dest/output/chtml/fonts/woff-v2/"
cp "$src/LICENSE" "$dest/LICENSE"
echo "MathJax $VERSION (npm package mathjax, es5 build) -- vendored by scripts/vendor_mathjax.sh" > "$dest/VERSION"
du -sh "$dest"
