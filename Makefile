# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of PyTorch; a GPU user sets TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url <their CUDA index>").
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test setup clean gpu-test gpu-bench

# Set-up says what it installs and shows pip's progress (a first install downloads about 1 GB: minutes).
$(STAMP): pyproject.toml
	@echo "poisonlab set-up 1/3: creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "poisonlab set-up 2/3: installing PyTorch ($(TORCH_SPEC)); the largest download, a few minutes"
	$(BIN)/pip install --progress-bar on $(TORCH_SPEC)
	@echo "poisonlab set-up 3/3: installing poisonlab with its test, Flower and MLflow extras"
	$(BIN)/pip install --progress-bar on -e ".[dev,flower,mlflow]"
	touch $(STAMP)
	@echo "poisonlab set-up done; next time 'make' skips it"

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/poisonlab demo

test: $(STAMP)
	$(BIN)/python -m pytest

# On a CUDA machine (a .venv with a CUDA build, see TORCH_SPEC): CPU-vs-CUDA agreement, then the engine benchmark.
gpu-test: $(STAMP)
	CUBLAS_WORKSPACE_CONFIG=:4096:8 $(BIN)/python -m pytest tests/test_gpu.py -v -rs

gpu-bench: $(STAMP)
	CUBLAS_WORKSPACE_CONFIG=:4096:8 $(BIN)/python benchmarks/gpu_engine.py

clean:
	rm -rf $(VENV) runs .pytest_cache
