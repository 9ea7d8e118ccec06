#!/usr/bin/env bash
# Gets onnxruntime-gpu and the service's dependencies onto a bare, offline GPU
# machine that is reached only through calls carrying at most 64 MiB each
# (the project's lent H100/H200), then runs benchmarks/gpu_check.sh there.
#
# The onnxruntime-gpu wheel is 255 MB, so it travels in five parts of ~51 MB,
# one per call, into the ignored folder .gpuacc/ that a warm machine keeps.
#
# Here, once (needs the package index):
#   bash benchmarks/gpu_bootstrap.sh prepare
#     -> .gpu/p1 ... .gpu/p5 (wheel parts), .gpu/deps (pure-Python and cp312 deps),
#        benchmarks/.cache/models/heavy (the compute-heavier CNN)
# There, one call each, back to back (the machine is given back ~30 s after a call):
#   call 1: bash benchmarks/gpu_bootstrap.sh receive 1    carry [".gpu/p1", ".gpu/deps"]
#   call k: bash benchmarks/gpu_bootstrap.sh receive k    carry [".gpu/pk"]         (k = 2..4)
#   call 5: bash benchmarks/gpu_bootstrap.sh receive 5 && bash benchmarks/gpu_bootstrap.sh check
#           carry [".gpu/p5", "benchmarks/.cache/models/heavy"]
# `check` installs the wheel, prints the providers onnxruntime offers and runs
#   gpu_check.sh --out $OUT --heavy benchmarks/.cache/models/heavy --duration 1.5
#   --workers 1,4 (later flags override; time-boxed by CHECK_S, default 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
ORT_SPEC=onnxruntime-gpu==1.31.1
PARTS=5
# exact versions known to work with the service (pyproject.toml's ranges)
DEPS=(fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5
      pydantic-settings==2.16.3 python-multipart==0.0.34 python-dotenv==1.2.4
      annotated-types==0.8.0 annotated-doc==0.0.7 typing-inspection==0.4.5
      typing-extensions==4.16.0 httptools==0.9.0)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
ACC=.gpuacc       # on the GPU machine: parts and the installed site-packages
SITE=$PWD/$ACC/site  # absolute: servers and load generators run as subprocesses

download() {  # pip download for CPython 3.12 on x86-64 Linux, whatever this machine is
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$@"
}

prepare() {
  for ignored in /.gpu/ /.gpuacc/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >>.git/info/exclude
  done
  mkdir -p .gpu/whl .gpu/deps
  ls .gpu/whl/onnxruntime_gpu-*.whl >/dev/null 2>&1 || download .gpu/whl "$ORT_SPEC"
  local wheel
  wheel=$(ls .gpu/whl/onnxruntime_gpu-*.whl | head -1)
  [[ "$(basename "$wheel")" == "$ORT" ]] || { echo "expected $ORT, got $wheel" >&2; exit 1; }
  download .gpu/deps "${DEPS[@]}"
  rm -rf .gpu/split && mkdir -p .gpu/split
  split -n "$PARTS" -d "$wheel" .gpu/split/part.
  for k in $(seq 1 "$PARTS"); do
    rm -rf ".gpu/p$k" && mkdir -p ".gpu/p$k"
    mv ".gpu/split/part.0$((k - 1))" ".gpu/p$k/"
  done
  rmdir .gpu/split
  sha256sum "$wheel" | cut -d' ' -f1 >.gpu/p$PARTS/sha256
  if [[ ! -f benchmarks/.cache/models/heavy/1/bundle.json ]]; then
    "${PYTHON:-.venv/bin/python}" -m benchmarks.heavy_model
  fi
  du -sh .gpu/p* .gpu/deps benchmarks/.cache/models/heavy
}

receive() {  # on the GPU machine: keep part k (and the deps with part 1) in .gpuacc
  local k=$1
  mkdir -p "$ACC"
  cp ".gpu/p$k"/part.* "$ACC/"
  [[ -f ".gpu/p$k/sha256" ]] && cp ".gpu/p$k/sha256" "$ACC/"
  if [[ ! -d "$SITE/fastapi" ]] && ls .gpu/deps/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .gpu/deps/*.whl
  fi
  ls -la "$ACC"
}

install() {  # join the parts, check the hash, install, say what onnxruntime offers
  local wheel=/tmp/$ORT
  cat "$ACC"/part.* >"$wheel"
  if [[ -f "$ACC/sha256" ]]; then
    echo "$(cat "$ACC/sha256")  $wheel" | sha256sum -c - || exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$wheel"
  PYTHONPATH="$SITE:$PWD" python3 -c '
import onnxruntime as ort
ort.preload_dlls()
print("onnxruntime", ort.__version__, ort.get_available_providers())'
}

check() {
  install
  PYTHONPATH="$SITE:$PWD" PYTHON=python3 timeout "${CHECK_S:-300}" \
    bash benchmarks/gpu_check.sh --out "${OUT:?set OUT}" \
    --heavy benchmarks/.cache/models/heavy --duration 1.5 --workers 1,4 "$@"
}

case "${1:-}" in
  prepare) prepare ;;
  receive) receive "${2:?part number}" ;;
  install) install ;;
  check) shift; check "$@" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
