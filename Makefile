# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs, runs the main job on the bundled digits data
#   make test   -> creates .venv, installs, runs the test suite
# torch is pinned for CPU machines by constraints/cpu.txt; a GPU user keeps their CUDA build with
#   make setup CONSTRAINTS=constraints/none.txt   (or a constraints file of their own)

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= tflite,ray,devices,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.modelpress-setup

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: setup
	$(BIN)/modelpress run recipes/digits.yaml

# two workers, one test file each at a time (module fixtures are built once); conftest.py shares
# the cores between them
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
