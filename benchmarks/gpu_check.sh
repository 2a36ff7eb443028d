#!/usr/bin/env bash
# GPU check of the `paper` profile (one table: step times at the papers' sizes, 500 real SCN iterations,
# projected hours of the whole paper run). Sized for < 8 minutes on one GPU; see benchmarks/gpu_check.py.
#
#   benchmarks/gpu_check.sh --data-root /data/ISBI2015-cepha400-jpg [--json out.json]
#   benchmarks/gpu_check.sh --device cpu --tiny [--data-root ...]      # checks the script end to end on a CPU
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]]; then py=python
elif [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"
else py=python3; fi
# a hard stop well inside the 8-minute budget (override with GPU_CHECK_TIMEOUT=seconds)
exec timeout "${GPU_CHECK_TIMEOUT:-470}" "$py" "$here/gpu_check.py" "$@"
