# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo
N      ?= 2000
PORT   ?= 8000

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint bench bench-service mutate clean

install: $(STAMP)

# torch is pinned (2.13.0, CPU build) and installed first, so nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ticketsearch demo-data --out $(DEMO)/tickets.jsonl -n $(N)
	$(BIN)/ticketsearch ingest --data $(DEMO)/tickets.jsonl --index $(DEMO)/index --schema support
	$(BIN)/ticketsearch train --index $(DEMO)/index
	$(BIN)/ticketsearch search --index $(DEMO)/index "customers were charged twice for their subscription" --field product="Billing Portal" -k 5
	$(BIN)/ticketsearch search --index $(DEMO)/index "app crashes when I open it" --filter product="Mobile App" --after $(shell date -u -d '180 days ago' +%F) -k 5
	$(BIN)/ticketsearch search --index $(DEMO)/index --like SUP-1900 -k 5 --explain
	$(BIN)/ticketsearch explain --index $(DEMO)/index --like SUP-1900 --out $(DEMO)/explain.png
	scripts/demo_serve.sh $(BIN) $(DEMO)/index $(PORT)

# Two workers (pytest-xdist), a test module's tests in one of them; the Ray modules (test_ray_*.py) are one work
# unit, run one after another on one worker (tests/conftest.py), so that none holds the other worker idle.
# Every module passes alone and in any order: --test-order reverse or random:SEED checks it.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

# ruff over the code, scripts and tests; mypy over the package as it lies in the tree (ticketsearch/'s links to
# the card's folders are the installed layout: ticketsearch/index_data -> ../index_data, and so on).
lint: $(STAMP)
	$(BIN)/ruff check index_data retrieval rerank service ticketsearch scripts tests
	$(BIN)/mypy -p ticketsearch

# Mutation testing of the core modules (cosmic-ray, installed here on first use), each against its own fast
# tests, in a copy of the tree; the report into docs/mutation.json (scripts/mutate.py lists the modules).
mutate: $(STAMP)
	$(BIN)/pip install --quiet 'cosmic-ray>=8.7'
	$(BIN)/python scripts/mutate.py --out docs/mutation.json

bench: $(STAMP)
	$(BIN)/python scripts/bench_index.py --out docs/bench_index.json

bench-service: $(STAMP)
	$(BIN)/python scripts/bench_service.py --index $(DEMO)/index --out docs/bench_service.json

clean:
	rm -rf $(DEMO) .pytest_cache
