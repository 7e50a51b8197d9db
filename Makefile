# pathfusion — see README.md.  Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
DEMO_WS := data/demo-workspace
STDLIB := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

.PHONY: demo test lint nvim corpus bench clean vscode-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# Stamps: reinstall when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# The tests cover training and export too, so they need the train extra (torch is pinned
# to the CPU build that pip finds on this machine's disk or on PyPI).
$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(PIP) install -e '.[train,dev]'
	touch $@

demo: $(VENV)/.runtime
	@echo "== code2vec path contexts of one function ($(STDLIB)/json/decoder.py) =="
	$(BIN)/pathfusion extract $(STDLIB)/json/decoder.py --line 250 --show 5
	@echo
	@echo "== name suggestions for badly named functions (examples/misnamed.py) =="
	$(BIN)/pathfusion suggest examples/misnamed.py --top-k 3
	@echo
	@echo "== name suggestions for the standard library's json/decoder.py =="
	$(BIN)/pathfusion suggest $(STDLIB)/json/decoder.py --top-k 3
	@echo
	@echo "== semantic search over the standard library's json, email and http packages =="
	@test -d $(DEMO_WS) || (mkdir -p $(DEMO_WS) && cp -r $(STDLIB)/json $(STDLIB)/email $(STDLIB)/http $(DEMO_WS)/)
	$(BIN)/pathfusion index $(DEMO_WS)
	@for q in "decode a JSON document" "send an HTTP request with headers" "parse an email address" "encode_basestring"; do \
	  echo "-- search: $$q"; $(BIN)/pathfusion search "$$q" --workspace $(DEMO_WS) --k 3 || exit 1; done
	@echo
	@echo "Connect an editor: run '$(BIN)/pathfusion serve' (LSP over stdio); see README.md."

test: $(VENV)/.dev lint nvim vscode-test
	$(BIN)/python -m pytest -q

# The extension's type check, eslint and unit tests (node:test; no VS Code needed).
vscode-test:
	cd vscode-client && npm ci --no-audit --no-fund && npm run lint && npm test

# tests/lsp/test_neovim.py drives the server from headless Neovim (Debian bookworm: 0.7.2).
nvim:
	@[ "$$PATHFUSION_SKIP_NVIM" = 1 ] || command -v nvim >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq neovim; \
	  else \
	    echo "nvim is missing: install Neovim >= 0.7 (e.g. 'sudo apt-get install neovim'), or set PATHFUSION_SKIP_NVIM=1 to skip the Neovim end-to-end test" >&2; \
	    exit 1; \
	  fi

lint: $(VENV)/.dev
	$(BIN)/ruff check server model_export tests benchmarks
	$(BIN)/mypy

corpus: $(VENV)/.runtime
	$(BIN)/pathfusion corpus --workers 2

bench: $(VENV)/.runtime
	$(BIN)/python benchmarks/extract.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The VS Code extension (vscode-client/): npm ci, esbuild bundle, vsce → vscode-client/pathfusion.vsix.
.PHONY: vsix e2e-vscode
vsix:
	cd vscode-client && npm ci --no-audit --no-fund && npm run build && npm run package

# Opt-in, not part of `make test`: the .vsix in code-server, driven by headless Chromium
# (installs chromium, libkrb5-dev, Node 24 and code-server when missing; see vscode-client/README.md).
e2e-vscode: vsix $(VENV)/.runtime
	vscode-client/e2e/run.sh
