# The two README commands: `make demo` and `make test`. Both set themselves up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

# npm packages of the generated-client test (TypeScript side); skipped with a note without npm.
TS_DIR := tests/clients/ts
TS_STAMP := $(TS_DIR)/node_modules/.installed

$(TS_STAMP): $(TS_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(TS_DIR) --no-audit --no-fund --loglevel=error && touch $(TS_STAMP); \
	else echo "npm not found: the TypeScript generated-client test will be skipped"; fi

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/customs-gateway demo

test: $(STAMP) $(TS_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python scripts/run_pytest.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
