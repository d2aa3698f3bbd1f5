# The two commands of the README. Both create .venv if it is missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench full lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

run: $(STAMP)  ## the paper reproduction, quick profile (two worker processes: the trials are independent)
	$(BIN)/normonly reproduce --profile quick --jobs 2 --out results

full: $(STAMP)  ## the paper reproduction, full profile
	$(BIN)/normonly reproduce --profile full --jobs 2 --out results-full

test: $(STAMP)  ## the whole test suite (slow tests included)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

bench: $(STAMP)  ## the solver benchmark suite
	$(BIN)/python benchmarks/bench_solvers.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
