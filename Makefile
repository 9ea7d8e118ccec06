# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: serve test lint format train-digits clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# serving needs only the service and the CPU onnxruntime
$(VENV)/.serve-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[cpu]'
	touch $@

# the suite also needs TensorFlow (parity, training) and the dev tools
$(VENV)/.test-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[cpu,train,dev]'
	touch $@ $(VENV)/.serve-deps

serve: $(VENV)/.serve-deps
	$(VENV)/bin/convserve

test: $(VENV)/.test-deps
	$(PY) -m pytest -q

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(VENV)/.test-deps
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# reproduces models/digits/1 (see README)
train-digits: $(VENV)/.test-deps
	$(VENV)/bin/convserve-train digits data/digits
	$(VENV)/bin/convserve-train train data/digits --name digits --version 1 --out models --config training/configs/digits.json

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .ruff_cache
