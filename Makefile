# Two commands do all the set-up: `make demo` and `make test`. Both create .venv if missing.
# Settings: PYTHON (the interpreter that creates .venv), TORCH (the torch requirement), EXTRAS (lway_rt's extras),
# TEST_JOBS (pytest-xdist workers for `make test`; 0 runs the suite in pytest's own process).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
EXTRAS ?= models,samples,onnx,plot,video,dev
TEST_JOBS ?= 2
# The stamp's name carries a checksum of TORCH and EXTRAS, so `make setup EXTRAS=...,gpu` after a plain set-up
# installs again (its stamp does not exist yet); each install removes the stamps of other settings.
SETTINGS := TORCH=$(TORCH) EXTRAS=$(EXTRAS)
STAMP    := $(VENV)/.lway_rt-installed-$(shell printf '%s' '$(SETTINGS)' | cksum | cut -d' ' -f1)
# A torch already in .venv is kept (a CUDA build stays), whatever its version, unless TORCH is given
# (`make setup TORCH=torch==2.12.0`, or in the environment) and the torch there does not meet it.
ifeq ($(origin TORCH),file)
KEEP_TORCH := torch
else
KEEP_TORCH := $(TORCH)
endif

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip
	@# Keep the torch already there (see KEEP_TORCH); otherwise install TORCH, the CPU build when no NVIDIA GPU
	@# works here (nvidia-smi -L fails without a driver or a GPU), so a CPU machine never downloads CUDA wheels.
	@$(PY) tools/torch_cpu_index.py --installed "$(KEEP_TORCH)" || { \
	  if nvidia-smi -L >/dev/null 2>&1; then $(PIP) install -q "$(TORCH)"; \
	  else $(PIP) install -q "$(TORCH)" $$($(PY) tools/torch_cpu_index.py); fi; }
	@# onnxruntime and onnxruntime-gpu install into one module and cannot sit side by side: the build the extras
	@# do not ask for goes first (a switch of EXTRAS between onnx and gpu, either way).
	@case ",$(EXTRAS)," in *,gpu,*) $(PIP) uninstall -y -q onnxruntime >/dev/null 2>&1 || true;; \
	  *,onnx,*) $(PIP) uninstall -y -q onnxruntime-gpu >/dev/null 2>&1 || true;; esac
	$(PIP) install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.lway_rt-installed*
	@printf '%s\n' '$(SETTINGS)' > $(STAMP)

test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

demo: setup
	$(VENV)/bin/lwayrt demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_out
