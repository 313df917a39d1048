"""``eif --help`` teaches: usage, the stages in pipeline order, methods, losses (with the unusable ones
marked), data sets and examples; its hand-written lists are checked against the registries here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from eif.stage_names import NAMES

ROOT = Path(__file__).resolve().parents[1]


def _help() -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--help"], capture_output=True, text=True, check=True
    )
    return out.stdout


def _section(text: str, title: str) -> str:
    return text.split(f"== {title}", 1)[1].split("\n==", 1)[0]


def _names(section: str) -> set[str]:
    """The option names listed in a section's body, parenthesised remarks left out."""
    return set(re.findall(r"[a-z_]+", re.sub(r"\(.*?\)", "", section.split("\n", 1)[1])))


def _options(group: str) -> set[str]:
    return {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}


def test_help_lists_stages_in_order_methods_losses_datasets_and_examples():
    text = _help()
    assert text.splitlines()[2].startswith("Usage: eif ")
    stages = [ln.split()[0] for ln in _section(text, "Stages").splitlines()[1:] if ln.strip()]
    assert stages == list(NAMES)
    methods = _names(_section(text, "Methods"))
    assert methods == _options("methods")
    losses = _section(text, "Losses")
    usable, refused = losses.split("not usable:")
    refused_names = set(re.findall(r"\b[a-z_]+\b", refused.split("(")[0]))
    usable_names = _names(usable)
    batch_dependent = {
        p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml") if "BatchDependentConfig" in p.read_text()
    }
    assert refused_names == batch_dependent == {"triplet", "contrastive", "multi_similarity"}
    assert usable_names == _options("loss") - batch_dependent
    datasets = _names(_section(text, "Data sets"))
    assert datasets == _options("dataset")
    examples = [ln.strip() for ln in _section(text, "Examples").splitlines()[1:] if ln.strip()]
    assert len(examples) >= 3 and all(e.startswith("eif ") for e in examples)
    assert re.search(r"^dataset: .*fashion_mnist", text, re.M)  # Hydra's own group list stays
