# Quick start: `make demo` and `make test`. Each target sets up .venv itself on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint bench bench-quick clean

# The generator is compiled with mypyc (tools/compile_native.py: a no-op when its sources
# have not changed; pure Python, same output, when there is no C compiler).
setup: $(STAMP)
	@$(PY) tools/compile_native.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: setup
	$(VENV)/bin/mp2amp demo

test: setup
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
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis
