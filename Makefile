# The two set-up commands from the README: `make quickstart` and `make test`.
# Both create .venv on first use. TORCH_SPEC pins the CPU wheel that CI uses; on a GPU machine,
# `make TORCH_SPEC=torch quickstart` lets pip resolve a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/dataforge quickstart

test: $(VENV)/.installed
	$(PY) -m pytest -q

.PHONY: install quickstart test
