# The two commands of the README: `make demo` and `make test`. Everything else is set up from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: demo test up down status deps install lint clean mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

deps:  ## system packages: Java 17, Maven, Prometheus (+ promtool) from Debian, if missing
	@deploy/install-system-deps.sh

up: install deps
	$(BIN)/streams dev up

demo: up
	$(BIN)/streams demo

lint: install
	$(BIN)/ruff check streams tests
	$(BIN)/ruff format --check streams tests
	$(BIN)/mypy streams

test: install deps lint
	@$(BIN)/streams dev up || { echo "make test: the local runtime could not start (see the line above)" >&2; exit 1; }
	$(BIN)/pytest

# Not part of `make test` (tens of minutes on 2 cores): mutants of the pure modules against the unit
# tests that reach them; writes docs/mutation.md (kill rate per module, every survivor and why).
mutation: install
	rm -rf mutants
	nice -n 10 $(BIN)/python -m tests.mutation run --max-children $$(nproc)

down:
	@if [ -x $(BIN)/streams ]; then $(BIN)/streams dev down; else echo "nothing to stop (no virtualenv)"; fi

status: install
	$(BIN)/streams dev status

clean: down
	rm -rf $(VENV) .streams
