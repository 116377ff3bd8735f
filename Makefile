# Two commands do everything on a fresh machine:
#   make demo   install tlplan in .venv and profile a built-in model
#   make test   install tlplan in .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the CPU build of torch comes from a local wheel; install it before anything can ask for torch
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tlplan profile mcunet-5fps --scheme bias
	$(BIN)/tlplan compare mobilenet_v2 --batch 8 --resolution 160 --schemes full,bias,blocks:5,mobiletl:5,gradfilter:4:2

test: $(STAMP)
	# one worker per core (pytest-xdist); each runs PyTorch on one thread (tests/conftest.py)
	$(BIN)/python -m pytest -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/profile_speed.py
	$(BIN)/python benchmarks/gradfilter_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
