#!/usr/bin/env bash
# The wheels bench/gpu_check.py needs beyond what the GPU machine has (Python 3.12, torch, torchvision, timm, onnx,
# onnxruntime, pyyaml, matplotlib, tqdm; no registry there): Optuna and its dependencies, fvcore and its,
# onnxscript for torch's ONNX exporter, and psutil for the memory check. About 7 MB, into wheels/ (git ignores
# it), to carry along.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=".venv/bin/pip"
mkdir -p wheels
"$PIP" download -q --no-deps -d wheels --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    "optuna>=5.0,<5.1" alembic sqlalchemy greenlet colorlog mako onnxscript onnx-ir yacs tabulate termcolor portalocker psutil
"$PIP" wheel -q --no-deps -w wheels fvcore iopath  # source only on PyPI, pure Python: built here
du -sh wheels
