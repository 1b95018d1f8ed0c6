# One command to serve, one to test: each creates .venv and (re)installs the pinned
# dependencies when requirements.lock or pyproject.toml changed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: run demo test lint bench fake-gemini lock clean cluster

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(BIN)/cero-api serve

# The server wired to the local Gemini stand-in in demo mode: tool steps, code execution
# and citations without a Gemini key (its own SQLite file, cero-demo.db; DEMO_ARGS: --port).
demo: $(STAMP)
	$(BIN)/python -m standins.demo $(DEMO_ARGS)

# N processes on 3001.. in cluster mode against the local Redis and PostgreSQL (trials).
N ?= 2
cluster: $(STAMP)
	scripts/cluster.sh $(N)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check client server actors cluster state standins tests bench scripts piccolo_conf.py
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m pip install -q -r bench/requirements.lock
	$(BIN)/python -m bench $(BENCH_ARGS)

fake-gemini: $(STAMP)
	$(BIN)/python -m standins.gemini $(FAKE_ARGS)

# Re-pin after changing dependencies in pyproject.toml.
lock:
	rm -rf /tmp/cero-lock && $(PY) -m venv /tmp/cero-lock
	/tmp/cero-lock/bin/pip install -q -e '.[dev]'
	/tmp/cero-lock/bin/pip freeze --exclude-editable | grep -v '^cero-api' > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
