# The two commands a new user needs: `make demo` and `make test`. Each builds what it needs.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE ?= 1
export SENTILOOP_LABEL_STUDIO_BIN ?= $(CURDIR)/.venv-labelstudio/bin/label-studio

.PHONY: setup demo test test-unit test-integration lint clean bench-retraining bench-scoring \
	bench-active-learning bench-ingest bench-serving bench-routing bench-loop-latency chaos \
	test-pythons bench-privacy bench-base-models bench-distillation bench-label-quality

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m orchestrator demo $(DEMO_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test-unit: setup
	$(PY) -m pytest -m unit -q

test-integration: setup
	$(PY) -m pytest -m integration -q

# two pytest-xdist workers: most integration time is waiting on Label Studio, workers and
# timers, so two share the 2 cores well (TEST_WORKERS=0: one process, in order)
TEST_WORKERS ?= 2
test: setup lint
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist worksteal

# setup and the unit tests on each Python 3.11-3.13 found (PYTHONS="..." to choose)
test-pythons:
	@bash scripts/test-pythons.sh

bench-retraining: setup
	$(PY) -m benchmarks.retraining $(BENCH_ARGS)

bench-scoring: setup
	$(PY) -m benchmarks.scoring $(BENCH_ARGS)

chaos: setup
	$(PY) -m tests.chaos --cycles 50 $(CHAOS_ARGS)

bench-ingest: setup
	$(PY) -m benchmarks.ingest $(BENCH_ARGS)

bench-serving: setup
	$(PY) -m benchmarks.serving $(BENCH_ARGS)

bench-active-learning: setup
	$(PY) -m benchmarks.active_learning $(BENCH_ARGS)

bench-privacy: setup
	$(PY) -m benchmarks.privacy $(BENCH_ARGS)

bench-base-models: setup
	$(PY) -m benchmarks.base_models $(BENCH_ARGS)

# needs all-mpnet-base-v2: make setup BASE_MODELS=all-mpnet-base-v2
bench-distillation: setup
	$(PY) -m benchmarks.distillation $(BENCH_ARGS)

bench-label-quality: setup
	$(PY) -m benchmarks.label_quality $(BENCH_ARGS)

bench-routing: setup
	$(PY) -m benchmarks.routing $(BENCH_ARGS)

bench-loop-latency: setup
	$(PY) -m benchmarks.loop_latency --out docs/benchmarks/loop_latency.md $(BENCH_ARGS)

clean:
	rm -rf var .venv .venv-labelstudio .pytest_cache .mypy_cache .ruff_cache
