#!/usr/bin/env bash
# Set up a fresh machine for eif: Debian packages, a virtualenv in .venv, and the Python packages
# from pyproject.toml. Idempotent; re-running it only installs what is missing.
#
# Debian packages (installed when apt-get is available and we are root, or via sudo):
#   dataset-fashion-mnist   the embedded default data set (/usr/share/datasets/fashion-mnist)
#   chromium                headless rendering of report.html in the tests
# The local SLURM cluster used by the tests installs its own packages (scripts/slurm-local/start.sh).
#
# Python packages, chosen by (docs/gpu.md):
#   EIF_EXTRAS  pyproject extras, default cpu,dev. One faiss extra: cpu (faiss-cpu), gpu = gpu-cu13
#               (faiss for CUDA 13; CPython 3.12, glibc >= 2.39) or gpu-cu12 (faiss for CUDA 12).
#   EIF_TORCH   the torch 2.14.1 build: cu130 (PyPI's build; the default unless EIF_EXTRAS has
#               gpu-cu12), cpu, or a CUDA 12 build such as cu126 (the default with gpu-cu12) or cu128.
#               The GPU extra must match its CUDA major version.
#   EIF_TORCH_INDEX_URL  where builds other than cu130 come from; default
#               https://download.pytorch.org/whl/$EIF_TORCH (set it to a mirror if that is unreachable).
#   PYTHON      the interpreter that creates .venv (default python3).
# When nvidia-smi exists, the NVIDIA driver is checked against the CUDA version of the torch build
# first (CUDA 13.x needs driver >= 580, CUDA 12.x >= 525).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "setup: error: $*" >&2; exit 1; }

APT_PKGS=(dataset-fashion-mnist chromium chromium-driver)
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

# --- which faiss, which torch ---------------------------------------------------------------------
EXTRA=${EIF_EXTRAS:-cpu,dev}
FAISS_DISTS=(faiss-cpu faiss-gpu faiss-gpu-cu12 faiss-gpu-cu12-cuvs faiss-gpu-cu13-cuvs)
# faiss-gpu-cu13-cuvs pins CUDA 13.0.0 components that torch 2.14.1 pins differently (pyproject.toml,
# extra gpu-cu13): it is installed without its pins, on top of torch's CUDA 13 libraries.
FAISS_CU13="faiss-gpu-cu13-cuvs==1.15.0"
stacks=()
case ",$EXTRA," in *,cpu,*) stacks+=(cpu) ;; esac
case ",$EXTRA," in *,gpu,* | *,gpu-cu13,*) stacks+=(cu13) ;; esac
case ",$EXTRA," in *,gpu-cu12,*) stacks+=(cu12) ;; esac
[ ${#stacks[@]} -le 1 ] || die "EIF_EXTRAS=$EXTRA names more than one faiss extra (${stacks[*]}); they install the same module: pick one"
stack=${stacks[0]:-none}
case $stack in
  cpu) faiss_dist=faiss-cpu ;;
  cu13) faiss_dist=faiss-gpu-cu13-cuvs ;;
  cu12) faiss_dist=faiss-gpu ;;
  none) faiss_dist="" ;;
esac
TORCH=${EIF_TORCH:-$([ "$stack" = cu12 ] && echo cu126 || echo cu130)}
[[ $TORCH =~ ^(cpu|cu1[23][0-9])$ ]] || die "EIF_TORCH=$TORCH: use cpu, cu130, or a CUDA 12 build such as cu126 or cu128"
torch_cuda=""  # the CUDA version torch reports (torch.version.cuda), e.g. 13.0
[ "$TORCH" = cpu ] || torch_cuda="${TORCH:2:2}.${TORCH:4:1}"
case $stack in
  cu13) [ "${torch_cuda%%.*}" = 13 ] || die "EIF_EXTRAS=$EXTRA installs faiss for CUDA 13 but EIF_TORCH=$TORCH; use EIF_TORCH=cu130, or EIF_EXTRAS=gpu-cu12,dev with a CUDA 12 torch" ;;
  cu12) [ "${torch_cuda%%.*}" = 12 ] || die "EIF_EXTRAS=$EXTRA installs faiss for CUDA 12 but EIF_TORCH=$TORCH; use EIF_TORCH=cu126 (or another cu12x build)" ;;
esac

# --- the driver must be new enough for torch's CUDA version ------------------------------------------
if [ -n "$torch_cuda" ] && command -v nvidia-smi >/dev/null; then
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ' || true)
  need=525 fix="ask for a newer driver"
  [ "${torch_cuda%%.*}" = 13 ] && need=580 fix="use EIF_TORCH=cu126 EIF_EXTRAS=gpu-cu12,dev (driver >= 525) or ask for a newer driver"
  if [[ $driver =~ ^[0-9]+ ]] && [ "${BASH_REMATCH[0]}" -lt "$need" ]; then
    die "torch 2.14.1 ($TORCH) is built for CUDA $torch_cuda, which needs NVIDIA driver >= $need, but this node has $driver: $fix"
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

if [ "$stack" = cu13 ]; then  # faiss-gpu-cu13-cuvs 1.15.0 ships one wheel: cp312, manylinux_2_39
  problem=$(.venv/bin/python -c '
import platform, sys
py, libc = sys.version_info[:2], platform.libc_ver()[1]
glibc = tuple(int(p) for p in libc.split(".")[:2]) if libc else (0, 0)
if py != (3, 12):
    print(f"Python {py[0]}.{py[1]} in .venv (remove .venv and re-run with PYTHON=python3.12)")
elif glibc < (2, 39):
    print("glibc " + (libc or "unknown") + " here")
')
  [ -z "$problem" ] || die "faiss-gpu-cu13-cuvs has wheels only for CPython 3.12 on glibc >= 2.39, and this is $problem; or use EIF_TORCH=cu126 EIF_EXTRAS=gpu-cu12,dev (faiss-gpu: CUDA 12, Python >= 3.10, glibc >= 2.28)"
fi

# --- install what is missing ---------------------------------------------------------------------------
ready() {  # the packages import, torch is the requested build and faiss the requested distribution
  .venv/bin/python - "$torch_cuda" "$faiss_dist" <<'EOF'
import sys
from importlib import metadata

import eif, hydra, torch, torchvision, wandb  # noqa: F401, E401
import faiss  # noqa: F401

want_cuda, want_faiss = sys.argv[1] or None, sys.argv[2]
assert torch.version.cuda == want_cuda, torch.version.cuda
assert not want_faiss or sorted(set(metadata.packages_distributions()["faiss"])) == [want_faiss]
EOF
}
if ! ready >/dev/null 2>&1; then
  echo "setup: pip install torch 2.14.1 ($TORCH) and torchvision first, then -e .[$EXTRA]"
  pip=(.venv/bin/python -m pip)
  "${pip[@]}" install -q --upgrade pip
  # torchvision must match torch; pin the pair this project is tested with. A build with a local
  # label (2.14.1+cu126, +cpu) replaces another build by itself; PyPI's cu130 build is plain 2.14.1,
  # which another 2.14.1 build already satisfies, so that one is removed first.
  if [ "$TORCH" = cu130 ]; then
    other_torch='import sys, torch; sys.exit(0 if torch.version.cuda != "13.0" else 1)'
    if .venv/bin/python -c "$other_torch" 2>/dev/null; then "${pip[@]}" uninstall -q -y torch torchvision; fi
  fi
  if [ "$TORCH" = cu130 ] && [ -z "${EIF_TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
  else
    index=${EIF_TORCH_INDEX_URL:-https://download.pytorch.org/whl/$TORCH}
    local_label=$([ "$TORCH" = cu130 ] || echo "+$TORCH")
    "${pip[@]}" install -q --index-url "$index" "torch==2.14.1$local_label" "torchvision==0.29.1$local_label"
  fi
  # The faiss distributions share one module: remove the others before installing the chosen one.
  others=()
  for d in "${FAISS_DISTS[@]}"; do [ "$d" = "$faiss_dist" ] || others+=("$d"); done
  "${pip[@]}" uninstall -q -y "${others[@]}" 2>/dev/null || true
  "${pip[@]}" install -q -e ".[$EXTRA]"
  if [ "$stack" = cu13 ]; then
    "${pip[@]}" install -q --no-deps "$FAISS_CU13"
  fi
fi
echo "setup: ok ($(.venv/bin/python -c '
from importlib import metadata
import torch
faiss = ",".join(sorted(set(metadata.packages_distributions().get("faiss", [])))) or "no faiss"
print(f"torch {torch.__version__}, CUDA", torch.version.cuda or "none", f"cudnn {torch.backends.cudnn.version()}, {faiss}")'))"
