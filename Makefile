# ShopperBERT: `make demo` (the whole pipeline on real data) and `make test` (install + tests).
# Both create .venv on first use. TORCH_SPEC is installed first, before the package, so pip never pulls a
# multi-GB CUDA build on CPU machines; a venv that already has torch (e.g. a GPU build) keeps it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

DATA ?= data/cj
RUN ?= runs/cj-small
CHECKPOINT ?= shopperbert-completejourney-small
RESULTS ?= results/demo

.PHONY: install test demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	HF_HOME=$$(mktemp -d) $(PY) -m pytest -q tests

demo: install
	$(PY) -m modeling_shopperbert.demo

clean:
	rm -rf $(VENV) data runs results
