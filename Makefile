# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test bench compat venv clean

# The extension's core + the `medsamlite` command + test tools (slicer-core: real MRML without Slicer),
# and, for the PyTorch-side folder and its tests only, torch (CPU) and medsamlite-torch.
$(VENV)/.installed: pyproject.toml pytorch/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q -e './pytorch[test]'
	@$(PY) -m pip list 2>/dev/null | grep -qiE '^(torchvision|timm|nvidia-|slicer )' && { echo "a dependency pulled torchvision/timm/CUDA or the unrelated 'slicer' package: refusing"; exit 1; } || true
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/medsamlite fetch-weights
	$(PY) MedSAMLite/Testing/demo.py --out demo_out

# Two pytest processes: the extension's suite, then the PyTorch side's (torch loaded into the same
# process as OpenVINO and slicer-core's VTK crashed a training test).
test: venv
	$(VENV)/bin/medsamlite fetch-weights
	$(PY) -m pytest -q MedSAMLite/Testing/tests
	$(PY) -m pytest -q pytorch/tests

# Benchmark commands (not tests): interactive speed and memory, encoders vs PyTorch, medsamlite predict and batch;
# about 20 minutes on 2 cores. Results and how to read them: docs/benchmarks.md.
bench: venv
	$(VENV)/bin/medsamlite fetch-weights
	$(PY) benchmarks/bench_slicer.py
	$(PY) benchmarks/bench_segment_write.py
	$(PY) pytorch/benchmarks/bench_encoders.py
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_batch.py

# Each supported Slicer's Python (5.6 to 5.12) and the requirements' floors, in fresh environments
# under .compat/: the panel's constrained install, then LiteMedSAM converted and a 2D and a 3D case
# segmented, masks equal to this environment's. Not part of `make test` (see docs/compat.md).
compat: venv
	$(VENV)/bin/medsamlite fetch-weights
	$(PY) MedSAMLite/Testing/compat.py

clean:
	rm -rf demo_out .pytest_cache .compat
