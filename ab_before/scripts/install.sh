#!/usr/bin/env bash
# Create .venv and install the bot with the in-process model engine and test tools.
# TORCH_SPEC picks the torch build: the default is the CPU wheel this machine kind has on
# disk; on a CUDA host use e.g. TORCH_SPEC="torch==2.11.0" (pip takes the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC" -e ".[model,test]"
