# vidsearch: two commands set everything up on a fresh machine.
#   make demo   create .venv if missing, install the core (no PyTorch: the demo runs its model on ONNX Runtime),
#               run the whole pipeline and serve it; a .venv that already has the full install keeps it
#   make test   create .venv if missing, install everything, run the test suite, then check the core install alone
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORE_STAMP := $(VENV)/.installed-core
CORE_VENV  := .venv-core
PYTEST_ARGS ?=

.PHONY: demo test test-all test-core bench-quick clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision first, pinned: the versions that lie on this machine's disk
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CORE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(CORE_STAMP)

demo: $(if $(wildcard $(STAMP)),$(STAMP),$(CORE_STAMP))
	$(BIN)/vidsearch demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)
	$(MAKE) test-core

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) test-core

# The core install alone (a venv of its own, kept between runs): torch is absent, the demo is indexed and searched.
test-core:
	test -x $(CORE_VENV)/bin/python || $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e .
	$(CORE_VENV)/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'open_clip')))"
	$(CORE_VENV)/bin/vidsearch demo --no-serve --videos 12 --workdir $(CORE_VENV)/demo
	$(CORE_VENV)/bin/vidsearch search "a red circle moves to the left" --store $(CORE_VENV)/demo/store -k 3

clean-venv:
	rm -rf $(VENV) $(CORE_VENV)
