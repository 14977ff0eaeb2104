# make test  - lint, type-check, the whole suite (SQLite and Postgres), docs site, package check
# make demo  - the example host app's smoke check on SQLite: every workflow to its expected end
# make bench - the benchmarks of docs/performance.md (SQLite and Postgres, about 8 minutes)
# Both create .venv with Python >= 3.11 and install what they need on a fresh machine.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest docs package demo bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "squid-mesh needs Python >= 3.11 on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check src tests examples benchmarks docs/_griffe
	$(BIN)/ruff check src tests examples benchmarks docs/_griffe

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest docs package

# The documentation site (mkdocs-material, API reference from the docstrings), strict.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

# Wheel and sdist built, the wheel installed into a fresh venv, the README example run from it.
package: $(STAMP)
	PYTHON=$(BIN)/python bash .ci/check-package

demo: $(STAMP)
	cd examples/minimal_host_app && ../../$(BIN)/python -m host_app smoke

# Every scenario on both stores (needs PostgreSQL); figures printed and written to
# benchmarks/results/latest.json. See docs/performance.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
