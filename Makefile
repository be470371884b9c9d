# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test venv bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[samples,eval,formats,test]'
	@$(PY) -m pip list 2>/dev/null | grep -qiE '^(torchvision|timm|nvidia-)' && { echo "a dependency pulled torchvision/timm/CUDA: refusing"; exit 1; } || true
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/medficient demo --out demo_out

test: venv
	$(VENV)/bin/medficient fetch-weights
	$(PY) -m pytest -q

bench: venv
	$(VENV)/bin/medficient demo --out bench_out --no-predict --bench-cases
	$(VENV)/bin/medficient bench -i bench_out/cases --json bench_out/bench.json

clean:
	rm -rf demo_out .pytest_cache
