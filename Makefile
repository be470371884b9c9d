# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# The Qt 5.15 profile of the panel tests (Slicer 5.6 to 5.12's default builds are Qt 5.15): PySide2 has
# wheels up to Python 3.10 only; numpy 1.26 as Slicer 5.6/5.8; openvino/opencv/SimpleITK for the engine the
# panel starts; no torch. Built once, reused (pip's download cache too).
PYTHON_QT5 ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python))),python3.10)
VENV_QT5   := .venv-qt5
QT5_PACKAGES := PySide2==5.15.2.1 'numpy<2' slicer-core==5.13.31053.0 'pytest>=7' openvino opencv-python-headless SimpleITK

.PHONY: demo test test-qt5 bench compat venv venv-qt5 clean

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

$(VENV_QT5)/.installed: Makefile
	$(PYTHON_QT5) -m venv $(VENV_QT5)
	$(VENV_QT5)/bin/python -m pip install -q --upgrade pip
	$(VENV_QT5)/bin/python -m pip install -q $(QT5_PACKAGES)
	@$(VENV_QT5)/bin/python -m pip list 2>/dev/null | grep -qiE '^(torch|PySide6|slicer )' && { echo "the Qt 5.15 profile pulled torch, PySide6 or the unrelated 'slicer' package: refusing"; exit 1; } || true
	touch $@

venv-qt5: $(VENV_QT5)/.installed

demo: venv
	$(VENV)/bin/medsamlite fetch-weights
	$(PY) MedSAMLite/Testing/demo.py --out demo_out

# Three pytest processes: the extension's suite (its panel tests on Qt 6), the panel tests again on
# Qt 5.15 (test-qt5), then the PyTorch side's (torch loaded into the same process as OpenVINO and
# slicer-core's VTK crashed a training test).
test: venv venv-qt5
	$(VENV)/bin/medsamlite fetch-weights
	MEDSAMLITE_QT=PySide6 $(PY) -m pytest -q MedSAMLite/Testing/tests
	$(MAKE) --no-print-directory test-qt5
	$(PY) -m pytest -q pytorch/tests

# The panel and Segment Editor effect tests on Qt 5.15 (PySide2, Python 3.10, numpy 1.26): a signal, property or method that
# Qt 5.15 lacks fails here (docs/panel_testing.md). Needs the LiteMedSAM weights (`make test` fetches them).
test-qt5: venv-qt5
	MEDSAMLITE_QT=PySide2 $(VENV_QT5)/bin/python -m pytest -q MedSAMLite/Testing/tests/test_panel.py MedSAMLite/Testing/tests/test_effect.py

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
