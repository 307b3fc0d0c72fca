# Quickstart targets: `make demo` (set up + analyze the bundled demo trace), `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -f build/demo.duckdb
	mkdir -p build
	$(BIN)/kvtool analyze traces/demo-agent.jsonl.gz --db build/demo.duckdb

test: $(STAMP)
	$(BIN)/ruff check kvtool tests bench examples
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/analyze_throughput.py

clean:
	rm -rf $(VENV) build
