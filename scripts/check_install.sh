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
WANDB_MODE=disabled "$tmp/venv/bin/eif" logger=none device=cpu dataset.max_per_class=30 train.epochs=1 \
  train.warmup_epochs=0 stages=[train,evaluate] >run.log 2>&1 || { cat run.log >&2; exit 1; }
ls outputs/store/train >/dev/null
echo "check_install: pip install . into a fresh venv; eif --help, --cfg job and a train+evaluate job ran in $tmp/work"
