# The two newcomer commands are `make up` (main job: service + local agent) and `make test` (tests);
# .ci/run calls `make test`.
# The first run creates .venv and installs everything (torch CPU wheel first, so pip never pulls CUDA).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: up demo test test-all bench study predictor clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

up: $(STAMP)
	$(PY) -m server up

demo: $(STAMP)
	$(PY) -m exporters onnx --space onnxw-151122-023231 --sample min --out out/seqnet-vnni-a0.int8.onnx
	$(PY) -m exporters tflite --space mobilew-122222-155400 --sample min --out out/seqnet-pixel4-a0.int8.tflite

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

bench: $(STAMP)
	$(PY) bench/export_bench.py
	$(PY) bench/predict_bench.py
	$(PY) bench/subnet_latency.py
	$(PY) bench/service_bench.py

# Regenerates docs/noise, docs/study and docs/fusion (tables, JSON, PNG plots) on this machine, ~30 min.
study: $(STAMP)
	$(PY) -m exporters onnx --space onnxw-151122-023231 --sample min --out out/models/vnni-a0.int8.onnx
	$(PY) -m exporters tflite --space mobilew-122222-155400 --sample min --out out/models/pixel4-a0.int8.tflite
	$(PY) -m profilers noise out/models/vnni-a0.int8.onnx --backend onnxruntime-cpu --out docs/noise
	$(PY) -m profilers noise out/models/pixel4-a0.int8.tflite --backend tflite-cpu --out docs/noise
	$(PY) -m profilers fusion --backend onnxruntime-cpu --out docs/fusion
	$(PY) -m profilers fusion --backend tflite-cpu --out docs/fusion
	$(PY) -m profilers study --backend onnxruntime-cpu --out docs/study
	$(PY) -m profilers study --backend tflite-cpu --out docs/study

# Builds, calibrates and evaluates this host's predictor for BACKEND from nothing, each step resumable
# (rerun to continue). On a quiet 2-core host with onnxruntime: kernels ~40 min, calibration set ~10 min,
# held-out evaluation ~75 min. See README, "Predicting".
BACKEND ?= onnxruntime-cpu
SLUG = $$($(PY) -c "from predictors.bundled import local_device; print(local_device('$(BACKEND)'))")
predictor: $(STAMP)
	$(PY) -m profilers collect --backend $(BACKEND) --per-type 150 --out data/kernels/$(SLUG)/$(BACKEND)
	$(PY) -m predictors train --backend $(BACKEND)
	$(PY) -m predictors eval local:$(BACKEND) --backend $(BACKEND) --set calib --n 40 \
	    --out data/networks/$(SLUG)/$(BACKEND)/calib
	$(PY) -m predictors calibrate local:$(BACKEND) --results data/networks/$(SLUG)/$(BACKEND)/calib/results.jsonl
	$(PY) -m predictors eval local:$(BACKEND) --backend $(BACKEND) --n 300 --save-eval \
	    --seqnets $${HIL_SHARED_DATA:-../shared/data}/spaceevo_search_result.yaml --out docs/eval/$(SLUG)/$(BACKEND)

clean:
	rm -rf out .pytest_cache
