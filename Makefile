# Every target runs plain `python -m …` commands, listed in README.md ("Without make") for Windows and any shell:
# `make run`: set up, then execute every lesson.   `make test`: set up, then unit tests + nbval (+ the book).
# `make demo`: set up, then serve the lessons' demos as an app (Voilà) at http://127.0.0.1:$(DEMO_PORT)/
# Everything is installed here, into $(VENV), at the exact versions of constraints.txt; nothing is assumed to be on
# the machine but python3. The package itself states only lower bounds (pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.invattn-installed
NB ?=
DEMO_PORT ?= 8866
ARGS ?=

.PHONY: setup run test bench lab demo book compat clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[course,book,test]'
	$(PY) -m invattn.kernel
	@touch $@

run: setup
	$(PY) -m invattn.run_notebooks $(if $(NB),--only $(NB)) $(ARGS)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m invattn.bench all

demo: setup
	@echo "invattn demos: open http://127.0.0.1:$(DEMO_PORT)/ in a browser (Ctrl-C stops the server)"
	$(PY) -m voila app/demos.ipynb --no-browser --port=$(DEMO_PORT) --Voila.ip=127.0.0.1

lab: setup
	$(PY) -m jupyterlab notebooks

book: setup
	$(PY) -m invattn.book

compat: setup
	$(PY) -m invattn.compat

clean:
	$(PYTHON) -c "import shutil; [shutil.rmtree(p, ignore_errors=True) for p in ('$(VENV)', 'notebooks/runs', 'book/_build', '.compat')]"
