# `make test` is the one command CI runs (.ci/run). It needs Python 3.11+; it starts and stops
# every service it uses (a throwaway PostgreSQL, the Pub/Sub emulator) by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
TOOLS  := $(VENV)/tools/.installed-$(shell cat requirements-tools.txt | cksum | cut -d' ' -f1)

AXE    := tests/ui/node_modules/axe-core/axe.min.js
# The offline `terraform validate` (tests/test_terraform_validate.py): provider schemas from npm,
# the schema server's own virtualenv from PyPI, each pinned by its lock or hashes.
TFSCHEMAS := tests/terraform/node_modules/.installed
TFPLUGIN  := tests/terraform/.venv/.installed-$(shell cat tests/terraform/requirements.txt | cksum | cut -d' ' -f1)

.PHONY: install lint types browser docs test bench dev clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# checkov (offline checks of infra/) lives in its own virtualenv: its pins clash with ours.
$(TOOLS): requirements-tools.txt $(STAMP)
	$(PYTHON) -m venv $(VENV)/tools
	$(VENV)/tools/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	rm -f $(VENV)/tools/.installed-*
	touch $(TOOLS)

# axe-core (the accessibility checker the dashboard's browser tests inject), pinned by its lock.
$(AXE): tests/ui/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix tests/ui --no-audit --no-fund --silent && touch $(AXE); \
	else echo "note: npm is missing; the dashboard's accessibility test will fail without it"; fi

$(TFSCHEMAS): tests/terraform/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix tests/terraform --no-audit --no-fund --silent && touch $(TFSCHEMAS); \
	else echo "note: npm is missing; the offline terraform validate test will fail without it"; fi

$(TFPLUGIN): tests/terraform/requirements.txt
	$(PYTHON) -m venv tests/terraform/.venv
	tests/terraform/.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r tests/terraform/requirements.txt
	rm -f tests/terraform/.venv/.installed-*
	touch $(TFPLUGIN)

install: $(STAMP) $(TOOLS) $(AXE) $(TFSCHEMAS) $(TFPLUGIN)

# Debian's chromium and chromium-driver for the dashboard's browser tests: installed when
# missing and we are root (CI), else a note on how (the tests then fail saying the same).
browser:
	@bash .ci/ensure-chromium

lint: install
	$(BIN)/ruff check .

types: install
	$(BIN)/mypy

# The docs site (mkdocs.yml), built strictly into .site/ (git-ignored): a broken link or anchor,
# a page under docs/ missing from nav, or a client symbol the reference names that is gone, fails
# the build, and so `make test`. Not --quiet: with it MkDocs 1.6.1 drops the warnings before
# --strict counts them, and a broken link passes (tests/test_docs_layout.py checks this recipe).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

test: lint types browser docs
	$(BIN)/python -m pytest

bench: install
	-$(BIN)/python -m bench.lifecycle
	-$(BIN)/python -m bench.submit_latency
	-$(BIN)/python -m bench.cold_start
	-$(BIN)/python -m bench.end_to_end
	-$(BIN)/python -m bench.process_alone
	-$(BIN)/python -m bench.sweep_scale
	-$(BIN)/python -m bench.schedules
	-$(BIN)/python -m bench.workflows
	-$(BIN)/python -m bench.history_query
	-$(BIN)/python -m bench.batch_submit
	-$(BIN)/python -m bench.noisy_neighbour
	-$(BIN)/python -m bench.chaos
	-SCHEMATHESIS_EXAMPLES=300 $(BIN)/python -m pytest -q -s --timeout=0 tests/test_openapi_contract.py
	-$(BIN)/python -m bench.state_properties
	$(BIN)/python -m bench.report

# The whole pipeline locally, in the foreground (see localstack/dev.py); Ctrl-C stops it. It
# needs only the runtime and dev requirements, not the tools virtualenv (checkov).
dev: $(STAMP)
	$(BIN)/python -m localstack.dev

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .site
