# chatterbox-server: `make run` installs what is missing and serves; `make test` runs every test.
# Every install reads the locks/ files only (exact versions with hashes); `make lock` refreshes them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
LOCKED := $(PIP) install --require-hashes --no-deps

.PHONY: install install-dev install-chatterbox run test test-fast smoke fuzz bench lint lock clean

# The runtime: the server on the embedded hibari engine (about 560 MB in the virtualenv).
install: $(VENV)/.installed

$(VENV)/.installed: locks/runtime.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(LOCKED) -r locks/runtime.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

# The test and lint tools, on top of the runtime (locks/dev.txt holds both, resolved together).
install-dev: $(VENV)/.dev-installed

$(VENV)/.dev-installed: locks/dev.txt $(VENV)/.installed
	$(LOCKED) -r locks/dev.txt
	touch $@

# torch, torchaudio and chatterbox-tts into the same virtualenv (several GB; CUDA builds run on CPU too).
# chatterbox-tts pins torch 2.6, which this project replaces: its real runtime deps come from
# locks/chatterbox.txt and the package itself is installed without its pins. The last step imports
# the whole engine stack, so a pair of torch and torchaudio that does not load fails here.
install-chatterbox: $(VENV)/.chatterbox-installed

$(VENV)/.chatterbox-installed: locks/chatterbox.txt locks/chatterbox-tts.txt $(VENV)/.installed
	$(LOCKED) -r locks/chatterbox.txt
	$(LOCKED) -r locks/chatterbox-tts.txt
	$(BIN)/python -m workers.engines.stack_check
	touch $@

run: install
	$(BIN)/gunicorn -c gunicorn.conf.py

# Two processes (pytest-xdist, a file per process so its server starts once) for everything but the
# real-Chatterbox tests; then those, and the tests that assert wall-clock latencies, in one process:
# two random checkpoints (5 GB each) and their servers at once filled the 24 GB and the kernel killed
# workers. (--dist loadgroup could have kept them in one xdist process, but pytest-xdist 3.8 cannot
# set a group on pytest 9.2, whose node ids it no longer writes.)
TEST_PROCESSES ?= 2
test: install-dev install-chatterbox
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile -m "not chatterbox and not serial"
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "chatterbox or serial"

# Everything but the real-Chatterbox tests; needs no torch.
test-fast: install-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not chatterbox"

# The product as a user installs it: tests/installed (both peers' examples, the OpenAI SDK, the
# Extended family) against a server that `make run` started, from any environment with the test
# tools (SMOKE_PYTHON; .ci/run uses a client virtualenv of its own, apart from the server's).
SMOKE_PYTHON ?= $(BIN)/python
SMOKE_URL ?= http://127.0.0.1:4123
SMOKE_EXTENDED_URL ?= http://127.0.0.1:7860
smoke:
	CHATTERBOX_INSTALLED_URL=$(SMOKE_URL) CHATTERBOX_INSTALLED_EXTENDED_URL=$(SMOKE_EXTENDED_URL) \
		$(SMOKE_PYTHON) -m pytest tests/installed -p no:cacheprovider

# A nightly-sized fuzz: property tests of the pure parts and schemathesis on every route, with
# many more examples than `make test` runs.
fuzz: install-dev
	HF_HUB_OFFLINE=1 HYPOTHESIS_PROFILE=nightly FUZZ_EXAMPLES=300 $(BIN)/python -m pytest \
		tests/unit/test_properties.py tests/unit/test_hostile_uploads.py tests/server/test_api_fuzz.py

bench: install-dev
	$(BIN)/python scripts/bench_streaming.py --output docs/benchmarks-latest.json

# ruff, mypy (pyproject.toml [tool.mypy]), then deptry: every third-party module the product
# imports is a runtime requirement.
lint: install-dev
	$(BIN)/ruff check chatterbox_server workers tests scripts gunicorn.conf.py
	$(BIN)/mypy
	scripts/check_deps.sh $(BIN)

# Re-resolves locks/ from the requirements files (LOCK_FLAGS="" keeps today's pins where it can).
lock: install-dev
	UV=$(BIN)/uv scripts/lock.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
