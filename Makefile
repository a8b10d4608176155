# The README's two commands: `make demo` and `make test`. Each creates .venv if needed and
# installs vqlab with the pinned dependencies of constraints.txt (torch==2.13.0 CPU build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vqlab-installed

.PHONY: demo test test-slow lint install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf demo
	$(BIN)/vqlab replicate synthetic --out demo
	@echo "open demo/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the end-to-end tier the default suite leaves out (pyproject's addopts); CI runs both
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check vqlab tests benchmarks
	$(BIN)/ruff format --check vqlab tests benchmarks

clean:
	rm -rf $(VENV) demo .pytest_cache
