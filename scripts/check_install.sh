#!/usr/bin/env bash
# The installed tool, as a user gets it: build and install eif with pip into a fresh virtualenv, then
# run the `eif` command from a directory outside the repository (--help, --cfg job, and a small real
# job on the embedded default). Run by CI after scripts/setup.sh.
#
# The fresh venv borrows the dependencies already installed in .venv (a .pth file adds .venv's
# site-packages after its own) instead of downloading torch again; eif itself is built from this
# checkout and installed into the fresh venv, and `pip check` proves every declared dependency is met.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tmp=$(mktemp -d)
# setuptools builds in ./build, where files of an earlier build (a module since deleted) would be packed too
rm -rf build
trap 'rm -rf "$tmp" "$repo/build"' EXIT
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

.venv/bin/python -m venv "$tmp/venv"
py=$tmp/venv/bin/python
purelib .venv/bin/python >"$(purelib "$py")/eif-ci-deps.pth"
# Python < 3.12 seeds every venv with an old setuptools that would shadow the borrowed one.
"$py" -m pip uninstall -y -q setuptools 2>/dev/null || true
"$py" -m pip install -q --no-deps "$repo"
"$py" -m pip check >/dev/null

mkdir "$tmp/work" && cd "$tmp/work"
where=$("$py" -c 'import eif, eif.cli; print(eif.cli.config_dir())')
case $where in "$tmp"/venv/*) ;; *) echo "check_install: eif ran from $where, not the fresh venv" >&2; exit 1 ;; esac
"$tmp/venv/bin/eif" --help >help.txt
grep -q "^dataset: .*fashion_mnist" help.txt || { echo "check_install: eif --help lists no dataset group" >&2; exit 1; }
"$tmp/venv/bin/eif" --cfg job >job.yaml
grep -q "^stages:" job.yaml || { echo "check_install: eif --cfg job printed no stages" >&2; exit 1; }
# The sweeps ship with the package: found by name, without --config-dir.
"$tmp/venv/bin/eif" --config-name table1_fmnist --cfg job >sweep.yaml
grep -q "^stages:" sweep.yaml || { echo "check_install: eif --config-name table1_fmnist did not compose" >&2; exit 1; }
# A local= that does not exist is one error line naming the ones that do, and launches nothing.
if "$tmp/venv/bin/eif" -m local=nosuch stages=[train] >nosuch.log 2>&1 || [ "$(wc -l <nosuch.log)" != 1 ] \
  || ! grep -q "^error: .*local/nosuch.*example_cluster" nosuch.log; then
  echo "check_install: local=nosuch did not fail in one line:" >&2; cat nosuch.log >&2; exit 1
fi
# Without faiss (hidden by a module that fails to import, first on the path) the job stops in one line
# before training: nothing in the store.
mkdir -p "$tmp/nofaiss/faiss"
echo 'raise ImportError("No module named faiss")' >"$tmp/nofaiss/faiss/__init__.py"
if PYTHONPATH=$tmp/nofaiss WANDB_MODE=disabled "$tmp/venv/bin/eif" logger=none device=cpu dataset.max_per_class=30 \
  train.epochs=1 stages=[train,evaluate] >nofaiss.log 2>&1 || [ "$(wc -l <nofaiss.log)" != 1 ] \
  || ! grep -q "^error: faiss is not importable.*eif\[cpu\]" nofaiss.log || [ -e outputs/store/train ]; then
  echo "check_install: a job without faiss did not stop in one line before training:" >&2; cat nofaiss.log >&2; exit 1
fi
# `eif dashboard` is dispatched by the console script (not a Hydra job): a wrong dir is one line.
if "$tmp/venv/bin/eif" dashboard nosuch >dash.log 2>&1 || ! grep -q "^error: dashboard: .*nosuch" dash.log; then
  echo "check_install: eif dashboard did not run:" >&2; cat dash.log >&2; exit 1
fi
# The first job a newcomer runs, as docs and help give it (warm-up `auto` fits a 1-epoch run).
WANDB_MODE=disabled "$tmp/venv/bin/eif" stages=[train,evaluate] train.epochs=1 dataset.max_per_class=100 logger=none \
  device=cpu >run.log 2>&1 || { cat run.log >&2; exit 1; }
ls outputs/store/train >/dev/null
echo "check_install: pip install . into a fresh venv; eif --help, --cfg job, a sweep by name, local=nosuch," \
  "eif dashboard, a job without faiss and a train+evaluate job ran in $tmp/work"
