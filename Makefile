# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: serve test lint format train-digits grpc-stubs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# serving needs only the service and the CPU onnxruntime
$(VENV)/.serve-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[cpu]'
	touch $@

# the suite also needs TensorFlow (parity, training), the dev tools and OpenTelemetry
$(VENV)/.test-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[cpu,train,dev,otel]'
	touch $@ $(VENV)/.serve-deps

# checkov (tests/deploy) pins packaging<24, which clashes with the dev tools:
# it gets a virtual environment of its own
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/.deps: tests/deploy/checkov-requirements.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

serve: $(VENV)/.serve-deps
	$(VENV)/bin/convserve

test: $(VENV)/.test-deps $(CHECKOV_VENV)/.deps
	$(PY) -m pytest -q

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(VENV)/.test-deps
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# reproduces models/digits/1 (see training/README.md); refuses to overwrite an existing
# bundle: `rm -rf models/digits/1` first, or `make train-digits MODELS_OUT=/tmp/models`
MODELS_OUT ?= models
train-digits: $(VENV)/.test-deps
	rm -rf data/digits
	$(VENV)/bin/convserve-train digits data/digits
	$(VENV)/bin/convserve-train train data/digits --out $(MODELS_OUT) --name digits --version 1 --config training/configs/digits.json

# service/grpc/grpc_predict_v2_pb2*.py from grpc_predict_v2.proto (grpcio-tools, dev extra);
# commit the result. tests/service/test_grpc_stubs.py fails when they are stale.
grpc-stubs: $(VENV)/.test-deps
	$(PY) service/grpc/generate.py

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .ruff_cache
