"""The per-run HTML report: built from small synthetic stage outputs, self-contained, and rendered
in headless Chromium with every image loaded (skipped when chromium is not installed)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eif.mislabel import detect, knn, relabel, survey
from eif.report import figures, run_report
from eif.report.tables import markdown, write_table
from eif.utils.io import save_npz, write_bytes, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
CFG = {"pairs": 2, "top_k": 5, "suggestions": 4, "class_examples": 3, "thumb_px": 64}


def _outputs(tmp: Path) -> dict[str, Path]:
    """Stage-shaped outputs of a tiny noisy run: 4 classes, 200 samples, 20 flipped labels."""
    rng = np.random.default_rng(0)
    n, c = 200, 4
    clean = np.repeat(np.arange(c), n // c)
    emb = (np.eye(c)[clean] * 5 + rng.normal(size=(n, c))).astype(np.float32)
    flipped = np.sort(rng.choice(n, 20, replace=False))
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + 1) % c
    d = {k: tmp / k for k in ("evaluate", "embed", "influence", "detect", "relabel", "survey")}
    save_npz(d["embed"] / "train.npz", features=emb, embeddings=emb, labels=noisy, clean_labels=clean,
             flipped=flipped)
    write_json(d["evaluate"] / "metrics.json", {"recall@1": 0.81, "nmi": 0.62})
    eif = rng.normal(size=n)
    eif[flipped] += 3.0
    save_npz(d["influence"] / "group_eif.npz", scores=eif[None])
    save_npz(d["influence"] / "group_if.npz", scores=rng.normal(size=(1, n)))
    ranks = {"eif": detect.descending(eif), "random": detect.random_ranking(n, 0)}
    table, curves = detect.summarise(ranks, flipped, n)
    write_table(table, d["detect"], "detection")
    write_bytes(d["detect"] / "detection_curves.png",
                figures.detection_curves(curves, dict(zip(table.ranking, table.area)), "synthetic"))
    write_json(d["detect"] / "detect.json", {"skipped": False, "n_train": n, "n_flipped": 20})
    q = np.flatnonzero(eif > 0)
    hard, soft, k = knn.recommend(emb, noisy, c, queries=q)
    review = relabel.review_table(q, soft, noisy, None, eif[q])
    write_text(d["relabel"] / "review.csv", review.to_csv(index=False))
    write_json(d["relabel"] / "relabel.json", {
        "k": k, "queries": "harmful", "n_queries": int(q.size),
        "changes_label": int((hard != noisy[q]).sum()),
        "knn_seconds": 0.01, "accuracy": relabel.relabel_accuracy(soft, q, noisy, clean, flipped)})
    write_table(pd.DataFrame([{"method": "EIF", "detection_s": 1.5, "recommendation_s": 0.01}]), d["relabel"],
                "runtime")
    all_hard, _, _ = knn.recommend(emb, noisy, c)
    det = survey.class_details(noisy, all_hard, c)
    t5 = survey.table5(det, survey.categorise(det))
    write_table(t5, d["survey"], "table5")
    counts = {x: int(t5[x].iloc[0]) for x in survey.CATEGORIES}
    write_bytes(d["survey"] / "table5.png", figures.bar_counts(counts, "synthetic"))
    return d


def _loader(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8), mode="L")


def _page(tmp_path: Path) -> Path:
    page = run_report.build("synthetic run", "test", _outputs(tmp_path), _loader, CFG, group=0)
    path = tmp_path / "report.html"
    write_text(path, page)
    return path


def test_report_is_self_contained(tmp_path: Path) -> None:
    text = _page(tmp_path).read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    # 2 methods x (5 harmful + 5 helpful) + curves + suggestions (1 + 3 examples each, up to 4) + Table 5 bars
    assert len(srcs) >= 20 + 2 + 4
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for heading in ("Model metrics", "Fig. 3", "Fig. 2", "Algorithm 1", "Table 5", "Table 3"):
        assert heading in text
    assert "strict" in text and "2nd label" in text


def test_markdown_table() -> None:
    md = markdown(pd.DataFrame({"a": ["x|y"], "b": [0.5], "c": [float("nan")]}))
    assert md.splitlines() == ["| a | b | c |", "|---|---|---|", "| x\\|y | 0.5000 |  |"]


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("screenshot_report",
                                                  ROOT / "scripts" / "screenshot_report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["screenshot_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    shot = _screenshot_module()
    keep = Path(os.environ.get("EIF_REPORT_SCREENSHOT", tmp_path / "report.png"))
    if shot.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    result = shot.check(_page(tmp_path), keep)
    assert result["images"] >= 26 and result["broken"] == 0
    assert result["height"] > 1000  # longer than one screen
    png = Image.open(keep)
    assert png.size[0] == 1280 and png.size[1] > 1000
    assert len(np.unique(np.asarray(png.convert("L")))) > 20  # drew images, not a blank page
