# Two commands do everything on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is newer than pyproject.toml once the environment matches it.
STAMP  := $(VENV)/.installed

.PHONY: install test repro sweep bench clean

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

# A sparsity sweep through DVC's experiment queue, then its Pareto report (reports/sweep/). One job at a time:
# each training uses every core already.
SPARSITIES ?= 0.3,0.5,0.7,0.9
JOBS       ?= 1
sweep: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc exp run --queue -S 'target_sparsity=$(SPARSITIES)'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc queue start -j $(JOBS)
	PATH="$(CURDIR)/$(BIN):$$PATH" timeout 7200 sh -c 'while dvc queue status | grep -qE "Queued|Running"; do sleep 10; done'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m hp.sweep

bench: $(STAMP)
	$(BIN)/python -m hp.bench compaction --shape base-plus --sparsity 0.7 --seconds 4 --threads 2 --json
	$(BIN)/python -m hp.bench scoring --json

clean:
	rm -rf $(VENV) .pytest_cache
