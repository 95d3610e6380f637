# chatterbox-server: `make run` installs what is missing and serves; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: install install-dev install-chatterbox run test test-fast fuzz bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt -e .
	touch $@

install-dev: $(VENV)/.dev-installed

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PIP) install -r requirements-dev.txt "numpy<2"
	touch $@

# torch, torchaudio and chatterbox-tts into the same virtualenv (several GB; CUDA builds run on CPU too).
# chatterbox-tts pins torch 2.6, which this project replaces: its real runtime deps come from
# requirements-chatterbox.txt and the package itself is installed without its pins.
install-chatterbox: $(VENV)/.chatterbox-installed

$(VENV)/.chatterbox-installed: requirements-chatterbox.txt $(VENV)/.installed
	$(PIP) install -r requirements-chatterbox.txt
	$(PIP) install --no-deps "chatterbox-tts==0.1.7"
	touch $@

run: install
	$(BIN)/gunicorn -c gunicorn.conf.py

test: install-dev install-chatterbox
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Everything but the real-Chatterbox tests; needs no torch.
test-fast: install-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not chatterbox"

# A nightly-sized fuzz: property tests of the pure parts and schemathesis on every route, with
# many more examples than `make test` runs.
fuzz: install-dev
	HF_HUB_OFFLINE=1 HYPOTHESIS_PROFILE=nightly FUZZ_EXAMPLES=300 $(BIN)/python -m pytest \
		tests/unit/test_properties.py tests/unit/test_hostile_uploads.py tests/server/test_api_fuzz.py

bench: install-dev
	$(BIN)/python scripts/bench_streaming.py --output docs/benchmarks-latest.json

lint: install-dev
	$(BIN)/ruff check chatterbox_server workers tests scripts gunicorn.conf.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
