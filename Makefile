# Quick start: `make demo` and `make test`. Each target sets up .venv itself on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_WORKERS ?= 2
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
JS_DEPS := tests/js/node_modules/.package-lock.json

.PHONY: setup test-deps demo test lint bench bench-quick clean

# The generator, the transform's per-event path, the identity graph and the Amplitude
# emulator's ingestion are compiled with mypyc (tools/compile_native.py, mp2amp/native.py:
# a no-op when their sources have not changed; pure Python, same output, without a C
# compiler).
setup: $(STAMP)
	@$(PY) tools/compile_native.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# What the tests drive besides Python: npm's mixpanel-browser SDK, in Debian's chromium.
test-deps: $(JS_DEPS)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (apt)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(JS_DEPS): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --silent

demo: setup
	$(VENV)/bin/mp2amp demo

test: setup test-deps
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/run.py

bench-quick: setup
	$(PY) bench/run.py --quick

clean:
	-$(PY) tools/compile_native.py --clean
	rm -rf $(VENV) build tests/js/node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
