# Two commands on a fresh Debian/Ubuntu machine:
#   make demo   - the whole system on embedded defaults (prints the map URL and a token)
#   make test   - the whole test suite against real PostgreSQL/PostGIS and mosquitto
# Each does its own set-up and skips what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system venv demo test bench lint clean

setup: system venv

system:
	@bash scripts/setup-system.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/ioc demo $(DEMO_ARGS)

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
