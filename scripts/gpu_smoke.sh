#!/usr/bin/env bash
# GPU smoke test: exercise every CUDA path of eif on one GPU in a few minutes (budget 10) and print
# PASS / FAIL / SKIP per check (scripts/gpu_smoke.py lists them). Without a usable GPU the CUDA checks
# print SKIP and the CPU checks still run. Exit status 1 if any check failed.
#   bash scripts/gpu_smoke.sh                      # all checks, in a new temporary work dir
#   bash scripts/gpu_smoke.sh --only env,memory    # some groups: env cpu cuda resume agree memory
#   bash scripts/gpu_smoke.sh --work /scratch/smk  # keep logs, runs and the store there
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled
exec timeout "${EIF_SMOKE_TIMEOUT:-900}" .venv/bin/python scripts/gpu_smoke.py "$@"
