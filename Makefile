# Pruning, hands-on -- two commands (see README.md):
#   make book   set up .venv and build the site into _build/html/
#   make test   set up .venv (+ Chromium) and run ALL tests: library, notebooks, site
SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
CHROMIUM   ?= /usr/bin/chromium
# Every test: unit/property tests, every notebook re-executed (nbval, lax mode), the site,
# and the examples in prunekit's docstrings.
PYTEST_ARGS ?= --nbval-lax --nbval-cell-timeout=300 --doctest-modules -p no:cacheprovider -ra tests book prunekit
SANITIZE   := $(wildcard book/sanitize.cfg)
ifneq ($(SANITIZE),)
PYTEST_ARGS += --nbval-sanitize-with $(SANITIZE)
endif

.PHONY: book test venv chromium notebooks lab clean help

help:
	@echo "make book   - set up $(VENV) and build the book (jupyter-book build . -W)"
	@echo "make test   - set up $(VENV) (+ Chromium) and run all tests"
	@echo "make notebooks - re-execute every notebook in book/ in place (store fresh outputs)"
	@echo "make lab    - start JupyterLab on the notebooks"
	@echo "make clean  - remove _build/"

# The virtual environment; re-installed when requirements.txt or pyproject.toml change.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

venv: $(VENV)/.installed

book: venv
	$(BIN)/jupyter-book build . -W
	@echo
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

# Debian's Chromium for the browser test (installed when missing and we are root).
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else \
	    echo "WARNING: $(CHROMIUM) not found; install it (sudo apt-get install -y chromium)."; \
	    echo "         Without it the browser tests are skipped (they fail when CI=true)."; \
	  fi; \
	fi

test: venv chromium
	MPLBACKEND=Agg $(BIN)/python -m pytest $(PYTEST_ARGS)

# Re-execute notebooks in place after changing code they use (NB=book/xx.ipynb for one).
notebooks: venv
	$(BIN)/python scripts/execute_notebooks.py $(NB)

lab: venv
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
