#!/usr/bin/env bash
# Build callrec_<version>_<arch>.deb from this checkout (`make deb`; tests/integration/test_package.py).
# Usage: debian/build-deb.sh [--version V] [OUTDIR]
#   --version V  build with one more changelog entry, version V (the upgrade test's newer build)
#   OUTDIR       also copy the .deb there (make deb: dist/)
# Prints the path of the .deb on its last line. Builds are cached under $CALLREC_DEB_CACHE
# (default /var/cache/callrec/deb), keyed on the sha256 of every file the package is built from
# (git's tracked and untracked-not-ignored files, as they are in the working tree) and V: a
# second run on the same source is instant, any change builds again.
set -euo pipefail
cd "$(dirname "$0")/.."
version=
if [ "${1:-}" = --version ]; then
  version=$2
  shift 2
fi
outdir=${1:-}
cache=${CALLREC_DEB_CACHE:-/var/cache/callrec/deb}

# What the package is built from: the whole source minus the tests and benchmarks.
if git rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -co --exclude-standard | grep -Ev '^(tests|bench|\.ci)/' | sort)
else
  mapfile -t files < <(find . -type f ! -path './.*' ! -path './tests/*' ! -path './bench/*' \
    ! -path './dist/*' ! -path './build/*' -printf '%P\n' | sort)
fi
existing=()
for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
key=$( { printf 'version=%s\n' "$version"; sha256sum -- "${existing[@]}"; } | sha256sum | cut -c1-16)
dest=$cache/$key

finish() {
  deb=$(ls "$dest"/callrec_*.deb)
  if [ -n "$outdir" ]; then
    mkdir -p "$outdir"
    cp "$deb" "$outdir/"
    deb=$outdir/$(basename "$deb")
  fi
  echo "$deb"
}
if ls "$dest"/callrec_*.deb >/dev/null 2>&1; then
  echo "cached build $key" >&2
  finish
  exit 0
fi

# The Debian version's upstream part is pyproject's version: one version, two spellings.
upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
debian=$(dpkg-parsechangelog -S Version)
case "${version:-$debian}" in
  "$upstream" | "$upstream"[-+~]*) ;;
  *) echo "build-deb: version ${version:-$debian} does not start with pyproject's $upstream" >&2; exit 2 ;;
esac
if ! missing=$(dpkg-checkbuilddeps 2>&1); then
  echo "build-deb: ${missing#dpkg-checkbuilddeps: error: }; tests/harness/apt-deps.sh installs them" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/callrec-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/callrec"
tar -cf - -- "${existing[@]}" | tar -xf - -C "$work/callrec"
if [ -n "$version" ]; then
  { printf 'callrec (%s) bookworm; urgency=medium\n\n  * Build %s of this source (debian/build-deb.sh --version).\n\n' "$version" "$version"
    printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -S Maintainer)" "$(date -R)"
    cat debian/changelog; } >"$work/callrec/debian/changelog"
fi
echo "building the package ($key), log: $work/build.log" >&2
if ! (cd "$work/callrec" && PIP_ROOT_USER_ACTION=ignore dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  cp "$work/build.log" "${TMPDIR:-/tmp}/callrec-deb-failed.log"
  echo "build-deb: dpkg-buildpackage failed; whole log: ${TMPDIR:-/tmp}/callrec-deb-failed.log" >&2
  exit 1
fi
mkdir -p "$cache"
rm -rf "$dest.tmp"
mkdir "$dest.tmp"
cp "$work"/callrec_*.deb "$work"/callrec_*.buildinfo "$work"/callrec_*.changes "$work/build.log" "$dest.tmp/"
mv "$dest.tmp" "$dest"
# Keep the ten newest builds (about 2 MB each).
ls -1dt "$cache"/*/ 2>/dev/null | tail -n +11 | xargs -r rm -rf --
finish
