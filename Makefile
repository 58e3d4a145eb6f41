# anomaly-ssl: two commands on a fresh machine (Python >= 3.10 on PATH)
#   make demo   set everything up and run the whole loop on a simulated shop
#   make test   set everything up and run the test suite
#
# TORCH picks the torch build: the CPU pin below is what CI and this project's
# dev machines use; on a GPU machine run e.g. `make demo TORCH=torch`.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install label-studio demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the Label Studio server lives in its own cached venv (it pins many packages)
label-studio: $(STAMP)
	$(BIN)/anomaly-ssl label-studio install

demo: install label-studio
	$(BIN)/python -m anomaly_ssl demo --out demo_out

test: install label-studio
	ANOMALY_SSL_NO_PROGRESS=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
