# Two commands do everything on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is newer than pyproject.toml once the environment matches it.
STAMP  := $(VENV)/.installed

.PHONY: install test repro bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Torch first and pinned: on this project's machines 2.13.0 is a local CPU wheel, while a bare
	# `torch` requirement would pull a multi-GB CUDA build from PyPI.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

bench: $(STAMP)
	$(BIN)/python -m hp.bench compaction --shape base-plus --sparsity 0.7 --seconds 4 --threads 2 --json
	$(BIN)/python -m hp.bench scoring --json

clean:
	rm -rf $(VENV) .pytest_cache
