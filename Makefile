# governor: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SITE_PORT ?= 8000
SITE_DIR ?= deploy/demo-site

.PHONY: run test lint typecheck unit check install clean bench soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Runs governor on the embedded SQLite store in front of a real local site:
# Python's http.server serving ./site on 127.0.0.1:$(SITE_PORT).
# Open http://localhost:8080/ and reload a few times: the demo cap is 200 KiB.
run: $(STAMP)
	$(BIN)/governor check --config config/governor.yaml
	@$(BIN)/python -m http.server --bind 127.0.0.1 --directory $(SITE_DIR) $(SITE_PORT) & \
	  site_pid=$$!; trap 'kill $$site_pid 2>/dev/null' EXIT INT TERM; \
	  echo "site on http://127.0.0.1:$(SITE_PORT)/ (pid $$site_pid); governor on http://localhost:8080/"; \
	  $(BIN)/governor serve --config config/governor.yaml

lint: $(STAMP)
	$(BIN)/ruff check governor tests
	$(BIN)/ruff format --check governor tests

typecheck: $(STAMP)
	$(BIN)/mypy governor

check: $(STAMP)
	$(BIN)/governor check --config config/governor.yaml

test: lint typecheck check
	$(BIN)/pytest

# governor against nginx and HAProxy on loopback (not part of `make test`; see tests/bench/).
# Installs nginx, haproxy, wrk, redis-server and curl with apt-get if missing (as root).
# BENCH_SECONDS (per wrk run, 5), BENCH_ROUNDS (3), BENCH_QUICK=1 (1 round of 2 s, no 1 GiB).
bench: $(STAMP)
	$(BIN)/python -m tests.bench

# A bounded run under mixed load with faults injected (not part of `make test`; see
# tests/soak/). SOAK_SECONDS (120), SOAK_CLIENTS (12), SOAK_SLOWLORIS (200). Uses
# redis-server when installed, and slowhttptest for a while when installed.
soak: $(STAMP)
	$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
