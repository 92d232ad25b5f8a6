#!/usr/bin/env bash
# The GPU check (issue 14.6): scripts/bench_gpu.py with a Python that can import genexp.
#   scripts/gpu_check.sh                # one CUDA GPU, under 8 minutes on an H200 -> docs/bench/gpu.json
#   scripts/gpu_check.sh --cpu-smoke    # tiny sizes on the CPU, no make demo -> a temp file
# Python: $PYTHON, else .venv/bin/python (made by make install), else python3. When python3 lacks
# Hydra / OmegaConf (an offline GPU image), wheels in .whl/ (hydra-core, omegaconf, antlr4) are
# installed under /tmp and `make demo` runs through a shim venv (VENV=/tmp/genexp-gpu-venv).
# Those wheels, made here once (pure Python; .whl/ is git-ignored, carry it to the GPU machine):
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: hydra-core==1.3.2 omegaconf==2.3.0 -d .whl
#   .venv/bin/python -m pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
make_args=()
imports="import torch, hydra, omegaconf, genexp.methods"
if [[ -n "${PYTHON:-}" ]]; then
  py=$PYTHON
elif [[ -x .venv/bin/python && -f .venv/.genexp-installed ]] || { [[ -x .venv/bin/python ]] &&
    .venv/bin/python -c "$imports" 2>/dev/null; }; then
  py=.venv/bin/python
else
  py=python3
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$py" -c "$imports" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
      --target /tmp/genexp-gpu-site .whl/*.whl
    export PYTHONPATH="$repo:/tmp/genexp-gpu-site${PYTHONPATH#"$repo"}"
  fi
  if ! err=$("$py" -c "$imports" 2>&1); then
    echo "gpu_check: $py cannot import genexp's needs ($(tail -n1 <<<"$err")): make install, or carry wheels in .whl/" >&2
    exit 2
  fi
  # make demo runs $(VENV)/bin/genexp: a shim venv on this Python, its install stamp newer than pyproject.toml.
  shim=/tmp/genexp-gpu-venv
  mkdir -p "$shim/bin"
  printf '#!/bin/sh\nexport PYTHONPATH="%s"\nexec "%s" "$@"\n' "$PYTHONPATH" "$(command -v "$py")" >"$shim/bin/python"
  printf '#!/bin/sh\nexport PYTHONPATH="%s"\nexec "%s" -m genexp "$@"\n' "$PYTHONPATH" "$(command -v "$py")" >"$shim/bin/genexp"
  chmod +x "$shim/bin/python" "$shim/bin/genexp"
  touch "$shim/.genexp-installed"
  make_args=(--make-arg "VENV=$shim")
fi
exec "$py" scripts/bench_gpu.py ${make_args[@]+"${make_args[@]}"} "$@"
