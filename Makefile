# The two commands of the quick start: `make demo` and `make test`.
# Both create a virtual environment in .venv and install streamer into it first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint sysdeps clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "streamer needs Python 3.10 or newer; set PYTHON=python3.11 (for example)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[gui,test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamer demo

# As root with apt-get, installs the Debian packages the system tests need (and python3-venv,
# which the virtual environment needs on a minimal Debian); otherwise says what is missing.
sysdeps:
	@bash scripts/install-system-deps.sh --if-root

# ruff: the lint rules and the formatting configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check streamer tests bench
	$(BIN)/ruff format --check streamer tests bench

test: sysdeps $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
