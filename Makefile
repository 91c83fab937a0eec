# Two commands for a new user: `make demo` and `make test` (`make test-fast`: without the slow tests). All create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARED ?= $(abspath ../shared/data)
# LFW for the tests and the demo, when the shared data folder is beside the checkout
export SCIKIT_LEARN_DATA ?= $(if $(wildcard $(SHARED)/lfw_home),$(SHARED),)

# constraints.txt: the exact, tested releases (pyproject.toml only has lower bounds)
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[faiss,offline,faces,timm,dev]'
	touch $@

.PHONY: install test test-fast demo
install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

# the edit-and-run loop: every test but those marked slow (under ~2 minutes on 2 cores)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed
	$(PY) -m benchmark sweep experiments/sweeps/demo.yaml --out results/demo --report reports/demo
