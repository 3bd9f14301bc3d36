# The two commands of the README, plus helpers. Every target sets up what it needs first (idempotent, quick when done).
VENV ?= .venv
PY := $(VENV)/bin/python
export BRIDGE_VENV := $(abspath $(VENV))

.PHONY: setup demo test test-slow bench bench-large profile docs
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/bridge convert examples/tiny_cnn/model.py:TinyCNN \
		--weights examples/tiny_cnn/tiny_cnn.safetensors --input x:1x3x64x64 --out out/tiny_cnn --force

test: setup
	$(PY) -m pytest -q -ra --durations=15

bench: setup
	@[ -d benchmarks/ort_web/node_modules/onnxruntime-web ] || (cd benchmarks/ort_web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Where the time goes: per-op profiles of every benchmark model in TF.js (wasm, cpu) and onnxruntime-web, and the
# fixed cost of one op call; benchmarks/results/profile.json and profile.md. About 15 minutes on a 2-core machine.
profile: setup
	@[ -d benchmarks/ort_web/node_modules/onnxruntime-web ] || (cd benchmarks/ort_web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	$(PY) benchmarks/op_profile.py $(PROFILE_ARGS)

# A ~200 M-parameter model (800 MB float32) through the native route, the writer and TF.js wasm in Node: a few minutes.
bench-large: setup
	$(PY) benchmarks/large_model.py $(BENCH_ARGS)

test-slow: setup
	BRIDGE_SLOW=1 $(PY) -m pytest -q -ra --durations=25
