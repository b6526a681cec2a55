#!/usr/bin/env bash
# Debian packages the demo and the tests need: PostgreSQL server binaries, debootstrap for
# the Asterisk chroot, util-linux (runuser, mount), python3-venv, ca-certificates (pip over
# https). ./dev installs make and python3 before make runs this.
# Also what builds and tests the .deb (make deb, tests/integration/test_package.py): debian/
# control's Build-Depends with build-essential (apt-get build-dep, so the list lives in one
# place), and lintian. `apt-deps.sh --deb` installs only those (make deb).
set -euo pipefail
cd "$(dirname "$0")/../.."
deb_only=
[ "${1:-}" = --deb ] && deb_only=1
need=()
tools=()
command -v dpkg-checkbuilddeps >/dev/null || need+=(dpkg-dev)
command -v lintian >/dev/null || tools+=(lintian)
build_dep=
if ! command -v dpkg-checkbuilddeps >/dev/null || ! dpkg-checkbuilddeps >/dev/null 2>&1; then
  build_dep=1
fi
if [ -z "$deb_only" ]; then
  [ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || need+=(postgresql)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v runuser >/dev/null || need+=(util-linux)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  # Tools the tests only run, without their recommends (prometheus would bring node-exporter):
  # promtool checks monitoring/, systemd-analyze checks systemd/callrec.service.
  command -v promtool >/dev/null || tools+=(prometheus)
  command -v systemd-analyze >/dev/null || tools+=(systemd)
  # The web page test drives headless Chromium over the DevTools protocol (chromedriver: for
  # anyone who prefers Selenium; the tests do not need it).
  command -v chromium >/dev/null || tools+=(chromium)
  command -v chromedriver >/dev/null || tools+=(chromium-driver)
  # npm fetches axe-core, the accessibility checker the browser tests run (Makefile).
  command -v npm >/dev/null || tools+=(npm)
  # Directory sign-in is tested against a real OpenLDAP (tests/harness/slapd.py starts its
  # own; Debian's postinst configures a system one that the tests never use). ldap-utils:
  # ldapsearch/ldapwhoami, for looking at a test directory by hand.
  [ -x /usr/sbin/slapd ] || tools+=(slapd)
  command -v ldapwhoami >/dev/null || tools+=(ldap-utils)
  # bench/event_path.py counts instructions with callgrind.
  command -v valgrind >/dev/null || tools+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ] || [ ${#tools[@]} -gt 0 ] || [ -n "$build_dep" ]; then
  echo "installing: ${need[*]} ${tools[*]}${build_dep:+ (and the build dependencies of debian/control)}"
  apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ${#tools[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
fi
if [ -n "$build_dep" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends ./ >/dev/null
fi
