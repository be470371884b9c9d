# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test venv bench clean e2e-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[samples,eval,formats,runtime,int8,app,train,test]'
	@$(PY) -m pip list 2>/dev/null | grep -qiE '^(torchvision|timm|nvidia-)' && { echo "a dependency pulled torchvision/timm/CUDA: refusing"; exit 1; } || true
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/medficient demo --out demo_out

# Debian's chromium for the app's end-to-end test (Playwright drives it; no browser is downloaded).
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: venv e2e-deps
	$(VENV)/bin/medficient fetch-weights
	$(PY) -m pytest -q

bench: venv
	$(VENV)/bin/medficient demo --out bench_out --no-predict --bench-cases --large-case
	for p in f32 bf16 int8; do $(VENV)/bin/medficient export --precision $$p; done
	$(VENV)/bin/medficient export --format onnx
	$(VENV)/bin/medficient bench -i bench_out/cases --modes official,torch,openvino,openvino-bf16,openvino-int8,onnxruntime \
	  --encoder --cold-start 10 --json bench_out/bench.json
	$(VENV)/bin/medficient bench -i bench_out/large --modes openvino --json bench_out/bench_large.json

clean:
	rm -rf demo_out .pytest_cache
