# The two commands of the quick start: `make demo` and `make test`.
# Both create a virtual environment in .venv and install streamer into it first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
PIP     = $(BIN)/python -m pip --quiet --disable-pip-version-check
NEWER_PYTHON = @$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "streamer needs Python 3.10 or newer; set PYTHON=python3.11 (for example)")'
# The demo needs no test tools, and on a box without a display only the headless OpenCV wheel.
DEMO_EXTRA := $(if $(DISPLAY)$(WAYLAND_DISPLAY),gui,headless)

.PHONY: demo test lint sysdeps clean test-opencv

# The tests: the desktop wheel (the window tests run under Xvfb) and the test tools.  A headless
# wheel the demo installed goes first: the two wheels overwrite each other's cv2.
$(STAMP): pyproject.toml
	$(NEWER_PYTHON)
	$(PYTHON) -m venv $(VENV)
	-@$(PIP) uninstall -y opencv-python-headless 2>/dev/null
	$(PIP) install -e '.[gui,test]'
	@touch $(STAMP)

# What the demo needs, unless the tests' install is there already (it has all the demo needs).
$(DEMO_STAMP): pyproject.toml
	$(NEWER_PYTHON)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
	  $(PYTHON) -m venv $(VENV) && $(PIP) install -e '.[$(DEMO_EXTRA)]' && touch $@; fi

demo: $(DEMO_STAMP)
	$(BIN)/streamer demo

# As root with apt-get, installs the Debian packages the system tests need (and python3-venv,
# which the virtual environment needs on a minimal Debian); otherwise says what is missing.
sysdeps:
	@bash scripts/install-system-deps.sh --if-root

# ruff: the lint rules and the formatting configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check streamer tests bench scripts
	$(BIN)/ruff format --check streamer tests bench scripts

# Test files run side by side in WORKERS processes (pytest-xdist; a file's tests stay together in
# one, so its module fixtures are made once), and the 15 slowest tests are listed.  The tests
# mostly wait (on servers, subprocesses, timeouts): on 2 cores, 4 workers took 2 min 15 s and
# used under one core, against 4 min with 2 workers, each test as fast as alone.
WORKERS  ?= 4
PARALLEL := -n $(WORKERS) --dist loadfile --durations=15

test: sysdeps $(STAMP)
	$(BIN)/python -m pytest $(PARALLEL)

# The tests that depend on the OpenCV build (marker opencv, listed in tests/conftest.py) on the two
# other OpenCVs CI covers (make test runs every test on the newest opencv-python, 5.x), less those
# that need the GUI wheel (marker gui): Debian's python3-opencv 4.6, with GStreamer, in a venv that
# sees the system's packages (pip must bring no cv2 wheel there), and the newest 4.x wheel.
DEB_VENV := .venv-debian-opencv
CV4_VENV := .venv-opencv4
SUITE    := -m pytest -q -p no:cacheprovider $(PARALLEL) -m "opencv and not gui"

$(DEB_VENV)/.installed: pyproject.toml
	rm -rf $(DEB_VENV)
	/usr/bin/python3 -m venv --system-site-packages $(DEB_VENV)
	$(DEB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

$(CV4_VENV)/.installed: pyproject.toml
	rm -rf $(CV4_VENV)
	$(PYTHON) -m venv $(CV4_VENV)
	$(CV4_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[headless,test]' 'opencv-python-headless<5'
	@touch $@

test-opencv: sysdeps $(DEB_VENV)/.installed $(CV4_VENV)/.installed
	$(DEB_VENV)/bin/python scripts/which-opencv.py --expect debian
	STREAMER_TEST_GSTREAMER=1 $(DEB_VENV)/bin/python $(SUITE)
	$(CV4_VENV)/bin/python scripts/which-opencv.py --expect 4
	$(CV4_VENV)/bin/python $(SUITE)

clean:
	rm -rf $(VENV) $(DEB_VENV) $(CV4_VENV) build *.egg-info
