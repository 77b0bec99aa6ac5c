# Two commands do all set-up on a fresh machine (Python 3.10+, pip, the package index):
#   make repro      - create .venv, install the pinned dependencies, run the whole DVC pipeline
#   make test       - same set-up, then the whole test suite (the CI command)
# and, once set up:
#   make setup      - the set-up alone (.venv with the pinned dependencies and lmlab, editable)
#   make test-fast  - the suite without the end-to-end tests marked slow (about 30 s)
#   make lint       - ruff check
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmlab-installed
# test processes (pytest-xdist); a test file stays in one process, so its tests share fixtures
TEST_WORKERS ?= 2

.PHONY: setup repro test test-fast lint params pretrain-params compare

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

setup: $(STAMP)

repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

# The sweep report: every experiment of HEAD (dvc exp show) as a model x strategy pivot in
# reports/sweep.md and reports/sweep.csv, with figures in reports/compare/.
compare: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python src/compare.py

# Recompose params.yaml from conf/ (DVC does this itself on `dvc exp run`).
params: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m lmlab.params > params.yaml.tmp && mv params.yaml.tmp params.yaml

# Recompose pretrain/params.yaml: conf/ with the overrides of pretrain/overrides.txt.
pretrain-params: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m lmlab.params $$(cat pretrain/overrides.txt) > pretrain/params.yaml.tmp \
		&& mv pretrain/params.yaml.tmp pretrain/params.yaml
