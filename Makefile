# Two commands do all the set-up: `make demo` and `make test`. Both create .venv if missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
EXTRAS ?= models,samples,onnx,plot,dev
STAMP  := $(VENV)/.lway_rt-installed

.PHONY: setup test demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q --upgrade pip
	@# Keep a torch that is already there (a CUDA build stays); otherwise take the CPU build
	@# when no NVIDIA GPU is present, so a CPU machine never downloads CUDA wheels.
	@$(PY) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "$(TORCH)"; \
	  else $(PIP) install -q "$(TORCH)" $$($(PY) tools/torch_cpu_index.py); fi; }
	$(PIP) install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/lwayrt demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_out
