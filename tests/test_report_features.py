"""``report`` on feature vectors (``dataset=features``): no images to show, so every sample is shown by
its path (or ``index:<i>``) in place of its thumbnail, on the report and on the review page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict

from eif.pipeline import run_job
from eif.utils.io import read_json
from tests.conftest import compose_cfg
from tests.fixtures import make_features


def _features_job(tmp_path: Path, extra: list[str]) -> dict[str, Any]:
    """Run a small features job (4 training classes of 20 noisy-labelled vectors) with ``extra``."""
    cfg = compose_cfg(
        tmp_path,
        [
            "dataset=features",
            f"dataset.path={tmp_path}/f/features.npz",
            "noise=p10",
            "train.epochs=3",
            "mine.num_pairs=5",
            "device=cpu",
            *extra,
        ],
        tiny=False,
    )
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return run_job(cfg)


def test_features_run_writes_report_and_review_page(tmp_path: Path) -> None:
    arrays = make_features(tmp_path / "f", dim=8, train_classes=4, test_classes=3, per_class=20)
    record = _features_job(tmp_path, ["methods=[eif,if]", "stages=[relabel,report]", "logger=none"])
    run = tmp_path / "run"
    text = (run / "report.html").read_text()
    train_paths = arrays["train_paths"].tolist()
    test_paths = arrays["test_paths"].tolist()
    # Every sample figure shows its path instead of an image; the only images are the charts.
    boxes = re.findall(r'<div class="noimg" style="height:\d+px" title="([^"]+)">([^<]+)</div>', text)
    assert len(boxes) > 20 and all(title == shown for title, shown in boxes)
    assert {p for p, _ in boxes} <= set(train_paths) | set(test_paths)
    assert {p for p, _ in boxes} & set(test_paths) and {p for p, _ in boxes} & set(train_paths)
    assert not re.search(r"<figure[^>]*><img", text)
    for heading in ("Top confusion pairs (Fig. 3)", "Relabel suggestions (Algorithm 1, Fig. 5)", "Group 1: "):
        assert heading in text

    page = (run / "review.html").read_text()
    m = re.search(r'<script id="review-data" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None
    data = json.loads(m.group(1))
    assert data["rows"] and all(r["img"] is None and r["path"] == train_paths[r["id"]] for r in data["rows"])
    assert all(e["img"] is None for ex in data["examples"].values() for e in ex)
    # The export identifies the run: the store keys of its stages, as run.json records them.
    assert data["store_keys"] == {s: k for s, k in record["keys"].items() if s != "report"}
    assert read_json(run / "run.json")["keys"]["relabel"] == data["store_keys"]["relabel"]


def test_features_run_logs_its_relabel_table_to_wandb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The W&B copy of the relabel suggestions has no thumbnail column for feature vectors (it called
    ``thumbnail`` on a numpy row and failed after the stage had computed)."""
    for var in ("WANDB_MODE", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    make_features(tmp_path / "f", dim=8, train_classes=4, test_classes=3, per_class=20)
    record = _features_job(
        tmp_path, ["methods=[eif]", "stages=[relabel]", "logger=wandb", "logger.mode=offline"]
    )
    assert "relabel" in record["keys"]
    logged = json.loads(next((tmp_path / "run").rglob("logged_keys.json")).read_text())
    assert "relabel/review" in json.dumps(logged)
