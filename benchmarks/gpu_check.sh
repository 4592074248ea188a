#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a machine with CUDA, in at most 8 minutes:
#   benchmarks/gpu_check.sh                 # GPU extras from the package index
#   WHEELS=path/to/wheels benchmarks/gpu_check.sh   # a machine without an index: wheels only
# Sets up .venv-gpu on top of the interpreter's own packages (a GPU machine keeps its CUDA torch), installs modelpress with the GPU extras (onnxruntime-gpu, tensorrt) there
# when it can, says which extra it could not install, and writes benchmarks/results/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${GPU_VENV:-.venv-gpu}
LIMIT_S=${GPU_CHECK_LIMIT_S:-450}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA GPU here ($PYTHON); run this on a machine with one" >&2
    exit 2
fi
if ! test -x "$VENV/bin/python"; then
    # the new environment sees the packages of $PYTHON's own (its torch with CUDA), behind its
    # own: a .pth file, which works when $PYTHON is itself a venv (--system-site-packages would
    # only reach the base interpreter's)
    "$PYTHON" -m venv "$VENV"
    own=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    "$PYTHON" -c "import site; print('\n'.join(site.getsitepackages()))" > "$own/_gpu_check_parent.pth"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation)
if [ -n "${WHEELS:-}" ]; then
    PIP+=(--no-index --find-links "$WHEELS")
fi
"${PIP[@]}" -e . || { echo "gpu_check: cannot install modelpress itself (see above)" >&2; exit 2; }
for extra in ort-gpu tensorrt; do
    "${PIP[@]}" -e ".[$extra]" >/dev/null 2>&1 \
        || echo "gpu_check: the $extra extra could not be installed here; its rows will say so" >&2
done
"${PIP[@]}" torchao >/dev/null 2>&1 \
    || echo "gpu_check: torchao (QAT) could not be installed here; the QAT row will say so" >&2
exec timeout "$LIMIT_S" "$VENV/bin/python" benchmarks/gpu_check.py "$@"
