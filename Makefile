# Every command anyone needs. The venv is (re)built when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODELS_VENV := .venv-models
LISTEN ?= 127.0.0.1:8780
STATE  ?= .batchd
WHEELHOUSE ?= dist/wheelhouse

.PHONY: serve test lint typecheck check clean wheelhouse faults bench lock

# Every package, pinned: installs take their versions from here, so a venv or a wheelhouse
# built on another day holds the same ones. `make lock` writes it again.
CONSTRAINTS := constraints.txt
# setuptools prints a 10-line notice on every editable install ("Editable installation.
# Please be careful with folders ..."): information, not a problem, so it is hidden; any
# other warning still shows.
PIP_INSTALL = PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet \
	--constraint $(CONSTRAINTS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# What the daemon needs and nothing more (about 80 MB): make serve.
$(VENV)/.installed-runtime: pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP_INSTALL) -e .
	touch $@

# The test and lint tools on top (the dev extra): make test, lint, typecheck. A venv that
# make serve built is upgraded in place.
$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

serve: $(VENV)/.installed-runtime
	$(BIN)/batchd serve --listen $(LISTEN) --state-dir $(STATE) --deploy examples/hello

test: $(VENV)/.installed-dev $(MODELS_VENV)/.installed browser nspawn postgres iproute2 promtool
	$(BIN)/pytest -q

# The model handlers' tests (tests/models/) and bench W4 run their APIs under this
# interpreter: the runtimes live in an API's own venv, never in the daemon's. Built once;
# as root or on CI those tests fail without it, elsewhere they skip.
$(MODELS_VENV)/.installed:
	$(PYTHON) -m venv $(MODELS_VENV)
	$(MODELS_VENV)/bin/pip install --quiet tensorflow-cpu onnxruntime onnx numpy
	touch $@

# The dashboard tests (tests/test_ui.py) drive Debian's Chromium. Best effort: as root with
# apt, install it when missing; otherwise those tests skip and say why.
.PHONY: browser
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "warning: could not install chromium; tests/test_ui.py will be skipped"; \
	fi

# tests/test_systemd_real.py boots Debian 12 with systemd-nspawn, from a root that
# debootstrap builds once into /var/cache/batchd-tests. Best effort, as for the browser:
# without them the test skips and says why.
.PHONY: nspawn
nspawn:
	@if { ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; } \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq systemd-container debootstrap >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq systemd-container debootstrap; } \
		|| echo "warning: could not install systemd-nspawn; tests/test_systemd_real.py will be skipped"; \
	fi

# The PostgreSQL store's tests (tests/pg.py) start a throwaway PostgreSQL 15 cluster. As
# root with apt, install it when missing. Not best effort: as root or on CI those tests
# fail, saying why, when the binaries are missing; elsewhere they skip.
.PHONY: postgres
postgres:
	@if [ ! -x /usr/lib/postgresql/15/bin/postgres ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq postgresql-15 >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq postgresql-15; } \
		|| echo "warning: could not install postgresql-15; the PostgreSQL store's tests will fail"; \
	fi

# tests/test_contrib.py runs promtool on contrib/prometheus/ (`check rules`, `test rules`).
# As root with apt, install Debian's `prometheus` when promtool is missing (19 MB download,
# 96 MB installed; without the node exporter it recommends). Only promtool is wanted: where
# systemd started the server the package also ships, stop and disable it. Not best effort,
# as for postgres: as root or on CI those tests fail without promtool; elsewhere they skip.
.PHONY: promtool
promtool:
	@if ! command -v promtool >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }; } \
		&& { [ ! -d /run/systemd/system ] || systemctl disable --now prometheus.service >/dev/null 2>&1 || true; } \
		|| echo "warning: could not install prometheus (promtool); tests/test_contrib.py will fail"; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check batchd tests bench testkit
	$(BIN)/ruff format --check batchd tests bench testkit
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

check: lint typecheck test

# The fault-injection suite at full size (kill -9, OOM, hangs, full disk, a million
# items, three daemons on one PostgreSQL...); rewrites tests/faults/RESULTS.md with the
# figures. Takes about 11 minutes.
faults: $(VENV)/.installed-dev vm-tools postgres iproute2
	BATCHD_FAULTS=full $(BIN)/pytest -q tests/faults

# The cluster partition scenario (tests/faults/test_cluster.py, in make test and make
# faults) puts a node in a network namespace of its own (ip netns, a veth pair). As root
# with apt, install iproute2 when missing; without it that scenario skips and says why.
.PHONY: iproute2
iproute2:
	@if ! command -v ip >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq iproute2 >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq iproute2; } \
		|| echo "warning: could not install iproute2; the network partition scenario will be skipped"; \
	fi

# The cgroup v2 scenarios of `make faults` boot a Debian VM (tests/faults/cgroup_vm.py):
# qemu runs it, debootstrap builds its image once. Best effort, as root with apt, like
# `browser`; without them those scenarios skip and say why.
.PHONY: vm-tools
vm-tools:
	@if { ! command -v qemu-system-x86_64 >/dev/null || ! command -v debootstrap >/dev/null; } \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq qemu-system-x86 debootstrap >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq qemu-system-x86 debootstrap; } \
		|| echo "warning: could not install qemu/debootstrap; the cgroup v2 scenarios will be skipped"; \
	fi

# The benchmark suite (bench/) at full size, 3 runs, against huey and the limits, and its
# scale section on a throwaway PostgreSQL (against procrastinate); rewrites
# bench/RESULTS.md. Installs the peers first (the `bench` extra). About 14 minutes.
# BENCH_ARGS passes options: make bench BENCH_ARGS="--only W1,W2 --runs 1" (or --only scale).
$(VENV)/.bench-installed: $(VENV)/.installed-dev
	$(PIP_INSTALL) -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed $(MODELS_VENV)/.installed postgres
	$(BIN)/python -m bench $(BENCH_ARGS)

# batchd, every runtime dependency and the postgres and s3 extras (asyncpg, boto3) as
# wheels, for an offline install (`batchd[postgres]` for a queue on PostgreSQL,
# `batchd[s3]` for s3:// inputs; boto3 is also what a cortex.yaml API's venv adds):
#   pip install --no-index --find-links $(WHEELHOUSE) batchd
# The versions are constraints.txt's, whatever the day.
wheelhouse: | $(VENV)/bin/python
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --constraint $(CONSTRAINTS) --wheel-dir $(WHEELHOUSE) '.[postgres,s3]'

# Write constraints.txt again: the newest releases that pyproject.toml allows, of the runtime
# dependencies and of every extra, resolved together in a fresh venv. Run the tests on them
# before committing it.
LOCK_VENV := build/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet '.[dev,bench,postgres,s3]'
	{ echo "# Written by make lock from pyproject.toml: every package of batchd and its extras,"; \
	  echo "# pinned. make serve, make test and make wheelhouse install with --constraint."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude batchd; } > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(MODELS_VENV) $(STATE) build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
