#!/usr/bin/env bash
# Build (once) a minimal Debian sid root with Asterisk 22, cached outside the repository.
# Asterisk is not in Debian bookworm; sid has it (docs/testing.md#asterisk-in-a-chroot).
# Usage: asterisk-root.sh [ROOT]   (default: $CALLREC_ASTERISK_ROOT or /var/cache/callrec/asterisk-root)
set -euo pipefail
root=${1:-${CALLREC_ASTERISK_ROOT:-/var/cache/callrec/asterisk-root}}
if [ -x "$root/usr/sbin/asterisk" ] && [ -f "$root/.callrec-ready" ]; then
  echo "asterisk root ready: $root"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi
rm -rf "$root.tmp"
mkdir -p "$(dirname "$root")"
debootstrap --variant=minbase --include=asterisk,asterisk-core-sounds-en-gsm \
  sid "$root.tmp" http://deb.debian.org/debian >"$(dirname "$root")/debootstrap.log" 2>&1 || {
  tail -n 30 "$(dirname "$root")/debootstrap.log" >&2
  exit 1
}
touch "$root.tmp/.callrec-ready"
rm -rf "$root"
mv "$root.tmp" "$root"
echo "asterisk root built: $root"
