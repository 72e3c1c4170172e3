# One place that knows how to install recengine's stack so that it works together.
#
# The TorchRec trap: `pip install torchrec` pulls `fbgemm-gpu` (a CUDA build) which replaces
# `fbgemm-gpu-cpu` and then fails to load on a CPU host (libtorch_cuda.so missing). So torch and
# fbgemm-gpu-cpu go in first, torchrec goes in with --no-deps, and its own needs come from
# pyproject.toml. `make setup-gpu` is the same dance with the CUDA builds for GPU hosts.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

TORCH_VERSION    := 2.13.0
FBGEMM_VERSION   := 1.8.0
TORCHREC_VERSION := 1.8.0

.PHONY: setup setup-gpu demo lint test test-slow bench bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)" "fbgemm-gpu-cpu==$(FBGEMM_VERSION)"
	$(PIP) install -q --no-deps "torchrec==$(TORCHREC_VERSION)"
	$(PIP) install -q -e ".[dev]"
	@$(BIN)/python -c "import torchrec, faiss, lightgbm, polars" || (echo "set-up check failed" && exit 1)
	@touch $@

# GPU hosts (CUDA 12): PyPI's Linux torch and fbgemm-gpu wheels are CUDA builds; faiss-gpu replaces faiss-cpu (never both).
setup-gpu:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)" "fbgemm-gpu==$(FBGEMM_VERSION)"
	$(PIP) install -q --no-deps "torchrec==$(TORCHREC_VERSION)"
	$(PIP) install -q --no-deps -e .
	$(PIP) install -q tensordict "torchmetrics==1.0.3" pyre-extensions tqdm polars==2.1.0 pyarrow \
		numpy==2.4.6 lightgbm==4.7.0 scikit-learn==1.9.1 pydantic typer rich pytest hypothesis \
		"fastapi==0.165.0" "uvicorn[standard]==0.55.0" "prometheus-client==0.26.0" "httpx==0.29.0"
	$(PIP) uninstall -y -q faiss-cpu fbgemm-gpu-cpu || true
	$(PIP) install -q faiss-gpu-cu12

demo: setup
	$(BIN)/recengine demo

# ruff (lint + format check) over the tree, mypy over the library packages (pyproject.toml's [tool.mypy]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python bench/run.py

bench-quick: setup
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) artifacts .pytest_cache
