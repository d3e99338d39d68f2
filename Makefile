# ShopperBERT: `make demo` (the whole pipeline on real data) and `make test` (install + tests).
# Both create .venv on first use (with the extras dev and spark: pyspark, for `data_prep build --engine spark`).
# TORCH_SPEC is installed first, before the package, so pip never pulls a multi-GB CUDA build on CPU machines; a
# venv that already has torch (e.g. a GPU build) keeps it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

# The demo: Complete Journey before the evaluation cutoff -> the released checkpoint shipped in shopperbert/ ->
# downstream suite (quick mode). `make pretrain` trains a short run of your own instead (CHECKPOINT=its folder).
CUTOFF ?= 2017-10-02
DATA ?= data/cj
RUN ?= runs/cj-small
CHECKPOINT ?= shopperbert
RESULTS ?= results/demo
PRETRAIN_EPOCHS ?= 8
LAUNCH := $(PY) -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no \
          --dynamo_backend no

.PHONY: install test demo data pretrain release evaluate clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,spark]"
	touch $@

install: $(VENV)/.installed

test: install
	HF_HOME=$$(mktemp -d) $(PY) -m pytest -q tests

demo: install
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory data evaluate && \
	echo "make demo finished in $$(( $$(date +%s) - start )) s; results in $(RESULTS)/, model $(CHECKPOINT)/"

data: install
	test -f $(DATA)/metadata.json || $(PY) -m data_prep build --source completejourney --end-date $(CUTOFF) \
	    --out $(DATA)

# A short pre-training run of your own (the released recipe, fewer epochs): runs/cj-small/best/.
pretrain: data
	test -f $(RUN)/final/config.json || $(LAUNCH) train.py --config configs/release.yaml --data $(DATA) \
	    --output $(RUN) --num-epochs $(PRETRAIN_EPOCHS)

# The released checkpoint's run (long: see README), then the Hub-ready folder shopperbert/ from its best/.
release: data
	test -f runs/release/final/config.json || $(LAUNCH) train.py --config configs/release.yaml --data $(DATA) \
	    --output runs/release

# The demo's evaluation: quick mode, one seed, U-MLP on the checkpoint and on an SVD of category counts, P-Trans from
# scratch and the classical baselines (the full comparison, 10-20 seeds, is in results/release/ and model_card.md).
DEMO_EVAL = --quick --repeats 1 --models u-mlp,p-trans,baselines --representations svd
evaluate: data
	$(PY) -m eval_suite run --model $(CHECKPOINT) --data $(DATA) --tasks all $(DEMO_EVAL) --overwrite --out $(RESULTS)

clean:
	rm -rf $(VENV) data runs $(RESULTS)
