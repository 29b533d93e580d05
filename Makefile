# Two commands do everything: `make run` (set up, then the default drift study) and `make test`
# (ruff format --check, ruff check, then the whole test suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint bench report newest lock

setup: $(VENV)/.installed

# scripts/install.sh holds the install steps; constraints.txt pins the versions CI tested.
$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	scripts/install.sh $(VENV) constraints.txt
	touch $@

run: setup
	$(PY) launch.py $(ARGS)

# Lint first (seconds): the style habits are checked, not hoped for. The suite runs on
# TEST_WORKERS pytest-xdist workers (one test file each at a time; each takes its share of the
# cores for torch, tests/conftest.py): on 2 cores much of a test is Python, so two overlap.
TEST_WORKERS ?= 2
test: setup lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: setup
	$(PY) -m ruff format --check . && $(PY) -m ruff check .

bench: setup
	$(PY) bench/embed.py
	$(PY) bench/audit.py
	$(PY) bench/sft.py
	$(PY) bench/backends.py
	$(PY) bench/monitors.py
	$(PY) bench/sweep.py
	$(PY) bench/update.py

# make report ARGS=outputs/multirun/<sweep dir>
report: setup
	$(PY) -m driftbench.report $(ARGS)

# The newest versions pyproject.toml allows, in a fresh .venv-newest: lint and the whole suite,
# then outputs/newest/report.md says which versions moved against constraints.txt and what broke
# (exit 1 if anything did). `make lock` then makes a venv that passed the new constraints.txt.
NEWEST ?= .venv-newest
newest:
	rm -rf $(NEWEST)
	scripts/install.sh $(NEWEST)
	python3 scripts/newest.py check $(NEWEST)

lock:
	python3 scripts/newest.py lock $(NEWEST)
