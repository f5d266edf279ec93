# governor: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The hot modules, compiled in place with mypyc (governor/build.py, governor/backend.py);
# compiled again whenever one of governor's sources changes.
NATIVE := $(VENV)/.compiled
SOURCES := $(shell find governor -name '*.py')
SITE_PORT ?= 8000

.PHONY: run test test-compiled test-pure lint typecheck unit check install clean bench \
	bench-scale bench-workers soak

# GOVERNOR_COMPILE=0 here: the venv's own mypy (a dev tool) compiles below, in place.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	GOVERNOR_COMPILE=0 $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Without a C compiler this says so and governor runs as pure Python.
$(NATIVE): $(STAMP) $(SOURCES)
	$(BIN)/python -m governor.backend
	@$(BIN)/governor --version
	touch $(NATIVE)

install: $(NATIVE)

# Runs governor on the embedded SQLite store in front of a real local site: the demo site
# (deploy/demo-site/serve.py: deploy/demo-site/www, sent with Cache-Control: no-store) on
# 127.0.0.1:$(SITE_PORT). The demo tenant's upstream in config/governor.yaml is
# "http://127.0.0.1:${SITE_PORT-8000}", so `make run SITE_PORT=8001` moves both.
# A port already in use stops it with one line saying which; Ctrl-C stops both.
# Open http://localhost:8080/ and reload it: the 14th reload (the 15th view) shows the notice
# (cap 200 KiB).
run: $(NATIVE)
	@SITE_PORT=$(SITE_PORT) $(BIN)/governor check --config config/governor.yaml
	@echo "make run: the demo site on 127.0.0.1:$(SITE_PORT), governor in front of it on" \
	  "http://localhost:8080/ (status page http://127.0.0.1:9090/status); Ctrl-C stops both"
	@SITE_PORT=$(SITE_PORT) $(BIN)/python deploy/demo-site/serve.py --port $(SITE_PORT) -- \
	  $(BIN)/governor serve --config config/governor.yaml

lint: $(STAMP)
	$(BIN)/ruff check governor tests
	$(BIN)/ruff format --check governor tests

# governor/ and tests/ (tests with one relaxation: see [tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy governor tests

check: $(STAMP)
	$(BIN)/governor check --config config/governor.yaml

# The whole suite twice: against the compiled build, then the same modules as pure Python.
test: lint typecheck check test-compiled test-pure

test-compiled: $(NATIVE)
	@$(BIN)/governor --version
	$(BIN)/pytest

test-pure: $(NATIVE)
	@if $(BIN)/governor --version | grep -q mypyc; then \
	  GOVERNOR_PURE=1 $(BIN)/governor --version && GOVERNOR_PURE=1 $(BIN)/pytest; \
	else echo "test-pure: nothing compiled, so the run above was the pure-Python one"; fi

# governor against nginx and HAProxy on loopback (not part of `make test`; see tests/bench/).
# Installs nginx, haproxy, wrk, redis-server, curl and openssl with apt-get if missing (as root).
# BENCH_SECONDS (per wrk run, 5), BENCH_ROUNDS (3), BENCH_QUICK=1 (1 round of 2 s, no 1 GiB).
bench: $(NATIVE)
	$(BIN)/python -m tests.bench

# One process against `workers: 2`: CPU and context switches per request on make bench's
# cores, and instructions per request under callgrind (see tests/bench/workers.py; ~12 min).
bench-workers: $(NATIVE)
	$(BIN)/python -m tests.bench.workers

# Issue 13's table: governor at 1 / 10,000 / 100,000 configured tenants (check, start-up, RSS,
# idle CPU, reload and scrape stalls, Redis flushes, four instances on one Redis, req/s) with
# nginx's `map $host` beside it (see tests/bench/scale/). SCALE_QUICK=1 (1 and 10,000 only),
# SCALE_TENANTS=1,20000, SCALE_TIMEOUT (300 s per wait), SCALE_PARTS=governor,fleet,nginx.
bench-scale: $(STAMP)
	$(BIN)/python -m tests.bench.scale

# A bounded run under mixed load with faults injected (not part of `make test`; see
# tests/soak/). SOAK_SECONDS (120), SOAK_CLIENTS (12), SOAK_SLOWLORIS (200). Uses
# redis-server when installed, and slowhttptest for a while when installed.
soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) state config/state build .pytest_cache .mypy_cache .ruff_cache
	find governor -name '*.so' -delete
