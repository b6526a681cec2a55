# callrec: the two commands (README.md), run as ./dev demo and ./dev test: ./dev installs make and
# python3 when missing, then runs make. Both need root on Debian: they install packages,
# build a cached Debian sid chroot with Asterisk 22, and run a throwaway PostgreSQL.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/daemon:$(CURDIR)
# axe-core, the accessibility checker the browser tests run in each page (tests/harness/browser.py),
# from the npm registry: the version is pinned there and here.
AXE_VERSION := 4.14.1
AXE := .cache/axe-core/node_modules/axe-core/axe.min.js

.PHONY: demo demo-cluster test deps lint bench deb screenshots messages lock

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

# debian/requirements.lock: the .deb's PyPI dependencies pinned with hashes, from pyproject.toml.
lock: $(VENV)/.installed
	$(VENV)/bin/pip install -q pip-tools
	$(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --no-header --no-emit-index-url --no-emit-find-links \
		--output-file .cache/requirements.lock pyproject.toml
	{ sed -n '1,3p' debian/requirements.lock; cat .cache/requirements.lock; } > .cache/lock.new
	mv .cache/lock.new debian/requirements.lock

deps: $(VENV)/.installed $(AXE)
	@tests/harness/asterisk-root.sh

$(AXE): $(VENV)/.installed
	npm install --prefix .cache/axe-core --no-save --no-audit --no-fund --loglevel=error axe-core@$(AXE_VERSION)
	touch $@

# The web page's strings into its catalogues (web/locale/*/LC_MESSAGES/callrec.po), after a change
# of wording: new strings arrive untranslated (English shows) until someone translates them.
# Python code says _(request, "...") (web/site.py), templates _("..."), definitions N_("...").
messages: $(VENV)/.installed
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k '_:2,2t' -k N_ --no-location --sort-output --project callrec -o .cache/callrec.pot .
	$(VENV)/bin/pybabel update -i .cache/callrec.pot -d daemon/callrec/web/locale -D callrec --no-fuzzy-matching --ignore-obsolete

# The pictures in docs/screenshots/: the browser tests, saving what each role sees.
screenshots: deps
	CALLREC_SCREENSHOTS=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest -p no:cacheprovider -q tests/integration/test_web_page.py \
		tests/integration/test_web_sign_in_browser.py tests/integration/test_web_dsar_browser.py

$(VENV)/.installed: pyproject.toml tests/harness/apt-deps.sh
	tests/harness/apt-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@
