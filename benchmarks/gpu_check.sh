#!/usr/bin/env bash
# The CUDA path in one run (issue 6). On the GPU machine:
#   bash benchmarks/gpu_check.sh --out "$OUT" --heavy benchmarks/.cache/models/heavy
# On CPU (what the test suite does, in seconds):
#   bash benchmarks/gpu_check.sh --providers cpu --quick --out /tmp/gpu_check
# Needs only the repo, numpy, Pillow, httpx, onnxruntime(-gpu), fastapi, uvicorn,
# pydantic-settings, python-multipart, prometheus-client; no TensorFlow, no network.
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ "${args[$i]}" == "--out" ]] && out="${args[$((i + 1))]:-}"
done
if [[ -n "$out" ]]; then
  mkdir -p "$out"
  { date -u; uname -a; nvidia-smi 2>&1 || echo "no nvidia-smi"; "$PYTHON" - <<'PY' 2>&1; } >"$out/environment.txt" || true
import sys
from importlib import metadata
print("python", sys.version)
for name in ("onnxruntime-gpu", "onnxruntime", "numpy", "pillow", "fastapi", "starlette", "uvicorn",
             "uvloop", "httptools", "python-multipart", "pydantic-settings", "prometheus-client",
             "httpx", "nvidia-cudnn-cu13", "nvidia-cuda-runtime"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "-")
import onnxruntime
print("available providers", onnxruntime.get_available_providers())
PY
fi
exec "$PYTHON" -m benchmarks.gpu_check "$@"
