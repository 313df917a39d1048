#!/usr/bin/env bash
# Set up a fresh machine for eif: Debian packages, a virtualenv in .venv, and the Python packages
# from pyproject.toml. Idempotent; re-running it only installs what is missing.
#
# Debian packages (installed when apt-get is available and we are root, or via sudo):
#   dataset-fashion-mnist   the embedded default data set (/usr/share/datasets/fashion-mnist)
#   chromium                headless rendering of report.html in the tests
# The local SLURM cluster used by the tests installs its own packages (scripts/slurm-local/start.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(dataset-fashion-mnist chromium)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
EXTRA=${EIF_EXTRAS:-cpu,dev}
if ! .venv/bin/python -c "import eif, torch, torchvision, faiss, hydra, wandb" 2>/dev/null; then
  echo "setup: pip install -e .[$EXTRA] (torch and torchvision come first)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torchvision must match torch; pin the pair this project is tested with.
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[$EXTRA]"
fi
echo "setup: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
