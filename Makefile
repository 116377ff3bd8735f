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
	$(BIN)/tlplan profile resnet50 --no-measure --scheme blocks:3 --format markdown --output resnet50-blocks3.md

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/profile_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
