#!/usr/bin/env bash
# Debian packages the demo and the tests need: PostgreSQL server binaries, debootstrap for
# the Asterisk chroot, util-linux (runuser, mount), python3-venv.
set -euo pipefail
need=()
[ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || need+=(postgresql)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v runuser >/dev/null || need+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
