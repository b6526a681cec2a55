#!/usr/bin/env bash
# Build (once) a minimal Debian bookworm root, as a new server would be (debootstrap
# --variant=minbase), cached outside the repository; tests/integration/test_package.py installs
# the .deb into a copy of it, never into the cache itself.
# Usage: bookworm-root.sh [ROOT]   (default: $CALLREC_BOOKWORM_ROOT or /var/cache/callrec/bookworm-minbase)
set -euo pipefail
root=${1:-${CALLREC_BOOKWORM_ROOT:-/var/cache/callrec/bookworm-minbase}}
if [ -x "$root/usr/bin/apt-get" ] && [ -f "$root/etc/debian_version" ]; then
  echo "bookworm root ready: $root"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi
rm -rf "$root.tmp"
mkdir -p "$(dirname "$root")"
debootstrap --variant=minbase bookworm "$root.tmp" http://deb.debian.org/debian \
  >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2
  exit 1
}
rm -rf "$root"
mv "$root.tmp" "$root"
echo "bookworm root built: $root"
