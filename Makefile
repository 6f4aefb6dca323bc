# The two commands of the quick start: `make demo` and `make test`.
# Both create a virtual environment in .venv and install streamer into it first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "streamer needs Python 3.10 or newer; set PYTHON=python3.11 (for example)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamer demo

test: $(STAMP)
	@bash scripts/install-system-deps.sh --if-root
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
