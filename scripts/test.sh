#!/usr/bin/env bash
# Run the test suite. When possible (root, Debian) it starts a real single-node SLURM cluster for
# the tests marked `slurm` and stops it afterwards; elsewhere those tests skip with the reason.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

started=0
if [ "${EIF_SLURM:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
   && [ -x scripts/slurm-local/start.sh ]; then
  if bash scripts/slurm-local/start.sh; then started=1; else echo "test: local SLURM did not start; slurm tests will skip"; fi
fi
cleanup() { [ "$started" = 1 ] && bash scripts/slurm-local/stop.sh || true; }
trap cleanup EXIT

.venv/bin/python -m pytest -q -ra "$@"
