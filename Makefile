# callrec: the two commands (README.md), run as ./dev demo and ./dev test: ./dev installs make and
# python3 when missing, then runs make. Both need root on Debian: they install packages,
# build a cached Debian sid chroot with Asterisk 22, and run a throwaway PostgreSQL.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/daemon:$(CURDIR)

.PHONY: demo demo-cluster test deps lint bench deb

demo: deps
	$(PY) -m tests.harness.demo

# Two PBXs, two callrec nodes, one PostgreSQL and one S3 store (docs/archive.md#stores).
demo-cluster: deps
	$(PY) -m tests.harness.demo_cluster

test: deps
	$(VENV)/bin/ruff check daemon tests bench
	$(VENV)/bin/ruff format --check daemon tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -p no:cacheprovider -q

# Every benchmark in bench/, reduced (--quick), one after another on this machine: JSON lines
# and a summary table in bench/out/ (bench/README.md). BENCH_FLAGS=--full for the long runs.
bench: deps
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) bench/summary.py $(BENCH_FLAGS)

# The Debian package, dist/callrec_<version>_<arch>.deb (docs/install.md), on Debian bookworm:
# installs the build tools it lacks (debian/control's Build-Depends), then debian/build-deb.sh
# (cached on the source's hash). Needs PyPI and the Debian mirror, nothing else.
deb:
	tests/harness/apt-deps.sh --deb
	debian/build-deb.sh dist

deps: $(VENV)/.installed
	@tests/harness/asterisk-root.sh

$(VENV)/.installed: pyproject.toml tests/harness/apt-deps.sh
	tests/harness/apt-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@
