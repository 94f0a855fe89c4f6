# The project's two commands are `make run` and `make test`; both set themselves up.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.annealbench-installed
OUT     ?= out/quick
STORE   ?= $(OUT)/results.sqlite

.PHONY: install system-deps run test lint format clean

install: $(STAMP) system-deps

# The venv is rebuilt only when the package metadata changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test,ray,parquet,jax,keras,hf,lightning,tracking]'
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

run: install
	$(BIN)/annealbench run --preset quick --store $(STORE)
	$(BIN)/annealbench report --store $(STORE) --out $(OUT)/report

test: install
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -n auto --dist loadgroup  # one worker per core; tests/conftest.py groups

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) out .pytest_cache
