#!/usr/bin/env bash
# lmkcore: set up the environment, then regenerate every figure and table (default),
# or run the test suite (--tests). See README.md.
#
#   ./run_all.sh [--profile smoke|quick|paper] [--dataset NAME] [--data-root PATH]
#                [--only NN[,NN...]] [--device auto|cpu|cuda[:N]] [--seed N] [...]
#   ./run_all.sh --tests [pytest arguments...]
#   ./run_all.sh --docs                      # API reference (pdoc) -> docs/api/index.html
#
# Figures go to figures/<profile>-<dataset>/ (one folder per run). Same options: python -m lmkcore.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

mode=notebooks
if [[ "${1:-}" == "--tests" ]]; then
    mode=tests
    shift
fi

die() { echo "run_all.sh: error: $*" >&2; exit 2; }

# 1. Environment: an active virtualenv/conda env is used as is; otherwise ./.venv.
if [[ -n "${VIRTUAL_ENV:-}" || -n "${CONDA_PREFIX:-}" ]]; then
    PY="$(command -v python || command -v python3)" || die "no python in the active environment"
else
    if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
        SYS_PY="$(command -v python3 || command -v python)" || die "Python 3.10+ is needed (python3 not found)"
        "$SYS_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || die "Python 3.10+ is needed, found $("$SYS_PY" --version 2>&1)"
        echo "run_all.sh: creating virtual environment in .venv"
        "$SYS_PY" -m venv "$ROOT/.venv"
    fi
    PY="$ROOT/.venv/bin/python"
fi

# 2. Install lmkcore (editable) once per change of pyproject.toml. torch is pinned first so
#    that pip does not pull a newer (and, on Linux, multi-GB CUDA) build; override with
#    LMKCORE_TORCH="torch==X.Y.Z" for another build.
stamp_dir="$("$PY" -c 'import sys; print(sys.prefix)')"
stamp="$stamp_dir/.lmkcore-install-$(cksum < "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$stamp" ]]; then
    echo "run_all.sh: installing lmkcore and its dependencies into $stamp_dir (first run only)"
    if ! "$PY" -c 'import torch' 2>/dev/null; then
        "$PY" -m pip install --quiet "${LMKCORE_TORCH:-torch==2.13.0}"
    fi
    "$PY" -m pip install --quiet -e "$ROOT[dev]"
    touch "$stamp"
fi

# 3. Run. Real-data studies (notebooks 05, 07, tests) are found through $LMKCORE_SHARED_DATA, never
#    relative to the installed package; default: the shared/data folder beside this checkout, if present.
export PYTHONUNBUFFERED=1
if [[ -z "${LMKCORE_SHARED_DATA:-}" && -d "$ROOT/../shared/data" ]]; then
    export LMKCORE_SHARED_DATA="$(cd "$ROOT/../shared/data" && pwd)"
fi
if [[ "$mode" == tests ]]; then
    exec "$PY" -m pytest "$@"
else
    exec "$PY" -m lmkcore.cli "$@"
fi
