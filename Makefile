# Two commands set everything up on a fresh machine:
#   make demo   -> creates .venv, installs radfusion, runs the demo study
#   make test   -> creates .venv, installs radfusion + test tools, runs the test suite
PYTHON ?= python3
VENV ?= .venv
# A pinned CPU-friendly torch; override e.g. TORCH="torch==2.13.0 --index-url ..." for a CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.radfusion-installed

.PHONY: demo test lint format bench-busi clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/radfusion demo --out demo_output

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
