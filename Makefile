# `make run`: set up, then execute every lesson.   `make test`: set up, then unit tests + nbval.
# `make demo`: set up, then serve the lessons' demos as an app (Voilà) at http://127.0.0.1:$(DEMO_PORT)/
# Everything is installed here, into $(VENV); nothing is assumed to be on the machine but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.invattn-installed
NB ?=
DEMO_PORT ?= 8866
ARGS ?=
LESSONS = $(sort $(wildcard notebooks/[0-9][0-9]*_*.ipynb))
export INVATTN_PLAIN_PROGRESS := 1

.PHONY: setup run test bench lab demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (invattn)" >/dev/null
	@touch $@

run: setup
	$(PY) -m invattn.run_notebooks $(if $(NB),--only $(NB)) $(ARGS)

test: setup
	$(PY) -m pytest tests $(LESSONS) --nbval-lax --nbval-current-env

bench: setup
	$(PY) -m invattn.bench all

demo: setup
	@echo "invattn demos: open http://127.0.0.1:$(DEMO_PORT)/ in a browser (Ctrl-C stops the server)"
	$(VENV)/bin/voila app/demos.ipynb --no-browser --port=$(DEMO_PORT) --Voila.ip=127.0.0.1

lab: setup
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(VENV) notebooks/runs
