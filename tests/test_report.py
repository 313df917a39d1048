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

from eif.influence.artifacts import write_analysis, write_index
from eif.mislabel import detect, knn, relabel, survey
from eif.report import figures, run_report
from eif.tables.format import markdown, write_table
from eif.utils.io import read_json, save_npz, write_bytes, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
CFG = {"pairs": 2, "top_k": 5, "suggestions": 4, "class_examples": 3, "thumb_px": 64}
PAIRS = np.array([[0, 12], [15, 31], [22, 5]])  # three confusion pairs of test indices (40 test samples)


def _outputs(tmp: Path) -> dict[str, Path]:
    """Stage-shaped outputs of a tiny noisy run: 4 classes, 200 samples, 20 flipped labels."""
    rng = np.random.default_rng(0)
    n, c = 200, 4
    clean = np.repeat(np.arange(c), n // c)
    emb = (np.eye(c)[clean] * 5 + rng.normal(size=(n, c))).astype(np.float32)
    flipped = np.sort(rng.choice(n, 20, replace=False))
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + 1) % c
    d = {k: tmp / k for k in ("evaluate", "embed", "influence", "detect", "relabel", "survey", "stats")}
    save_npz(
        d["embed"] / "train.npz",
        features=emb,
        embeddings=emb,
        labels=noisy,
        clean_labels=clean,
        flipped=flipped,
    )
    test_labels = np.repeat(np.arange(c), 10)
    save_npz(
        d["embed"] / "test.npz",
        features=emb[:40],
        embeddings=emb[:40],
        labels=test_labels,
        clean_labels=test_labels,
    )
    eif = rng.normal(size=n)
    eif[flipped] += 3.0
    group_scores = {"eif": eif[None], "if": rng.normal(size=(1, n))}
    entries = []
    for method, seed in (("eif", 1), ("if", 2)):
        scores = np.random.default_rng(seed).normal(size=(PAIRS.shape[0], n)).astype(np.float32)
        scores[:, flipped[0]] = 10.0  # the most harmful training sample of every pair is a flipped one
        pairs = [p[None] for p in PAIRS]
        entries.append(
            write_analysis(
                d["influence"], "pair", method, scores, np.array([0.1, 0.2, 0.3]), pairs, {}, {}, 0.1
            )
        )
        entries.append(
            write_analysis(
                d["influence"], "group", method, group_scores[method], np.array([0.2]), [PAIRS], {}, {}, 0.2
            )
        )
    write_index(d["influence"], entries, n, {})
    write_json(
        d["stats"] / "stats.json",
        {
            "rows": [
                {
                    "kind": "pairs",
                    "test": "paired t-test",
                    "n": 3,
                    "available": 3,
                    "status": "ok",
                    "improvement": 0.0123,
                    "statistic": 2.5,
                    "pvalue": 0.0456,
                },
                {
                    "kind": "groups",
                    "test": "Wilcoxon",
                    "n": 5,
                    "available": 1,
                    "status": "not enough",
                    "improvement": None,
                    "statistic": None,
                    "pvalue": None,
                },
            ],
            "job": {},
        },
    )
    write_json(d["evaluate"] / "metrics.json", {"recall@1": 0.81, "nmi": 0.62})
    ranks = {"eif": detect.descending(eif), "random": detect.random_ranking(n, 0)}
    table, curves = detect.summarise(ranks, flipped, n)
    write_table(table, d["detect"], "detection")
    write_bytes(
        d["detect"] / "detection_curves.png",
        figures.detection_curves(curves, dict(zip(table.ranking, table.area)), "synthetic"),
    )
    write_json(d["detect"] / "detect.json", {"skipped": False, "n_train": n, "n_flipped": 20})
    q = np.flatnonzero(eif > 0)
    hard, soft, k = knn.recommend(emb, noisy, c, queries=q)
    review = relabel.review_table(q, soft, noisy, None, eif[q])
    write_text(d["relabel"] / "review.csv", review.to_csv(index=False))
    write_json(
        d["relabel"] / "relabel.json",
        {
            "k": k,
            "queries": "harmful",
            "n_queries": int(q.size),
            "changes_label": int((hard != noisy[q]).sum()),
            "knn_seconds": 0.01,
            "accuracy": relabel.relabel_accuracy(soft, q, noisy, clean, flipped),
        },
    )
    write_table(
        pd.DataFrame([{"method": "EIF", "detection_s": 1.5, "recommendation_s": 0.01}]),
        d["relabel"],
        "runtime",
    )
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
    page = run_report.build("synthetic run", "test", _outputs(tmp_path), CFG, 0, _loader, _loader)
    path = tmp_path / "report.html"
    write_text(path, page)
    return path


def test_report_is_self_contained(tmp_path: Path) -> None:
    text = _page(tmp_path).read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    # pairs 2 x (2 test + 2 methods x 10) + group 2 methods x (5 harmful + 5 helpful) + curves
    # + suggestions (1 + 3 examples each, up to 4) + Table 5 bars
    assert len(srcs) >= 44 + 20 + 2 + 4
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for heading in (
        "Model metrics",
        "Fig. 3",
        "Confusion group 0",
        "Fig. 2",
        "Algorithm 1",
        "Table 5",
        "Table 1",
        "Table 3",
    ):
        assert heading in text
    assert "strict" in text and "2nd label" in text


def _section(text: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert m is not None, f"no section {anchor}"
    return m.group(1)


def test_confusion_pairs_section(tmp_path: Path) -> None:
    """Fig. 3: report.pairs pairs, each with its 2 test images and top-5 harmful + helpful per method."""
    out = _outputs(tmp_path)
    text = run_report.build("synthetic run", "test", out, CFG, 0, _loader, _loader)
    sec = _section(text, "top-confusion-pairs--fig--3-")
    cards = sec.split('<div class="card">')[1:]
    assert len(cards) == CFG["pairs"]
    for k, card in enumerate(cards):
        assert len(re.findall(r"<img ", card)) == 2 + 2 * (5 + 5)
        assert f"d0 = {0.1 * (k + 1):.4f}" in card
        a, b = PAIRS[k]
        assert f"test #{a}\nclass {a // 10}" in card and f"1-NN #{b}\nclass {b // 10}" in card
        for m in ("EIF", "IF"):
            assert f"{m} most harmful" in card and f"{m} most helpful" in card
        assert card.count('class="harm"') == 10 and card.count('class="help"') == 10
    # The flipped sample with score 10 leads every harmful list, captioned with both labels and its score.
    with np.load(out["embed"] / "train.npz") as z:
        f = int(z["flipped"][0])
        y, c = int(z["labels"][f]), int(z["clean_labels"][f])
    for m in ("EIF", "IF"):
        first = re.search(rf"{m} most harmful</div>.*?<figcaption>(.*?)</figcaption>", cards[0], re.S)
        assert first is not None and first.group(1) == f"#{f} y={y} (clean {c})\ns=+10"
    # Without pair scores (or without test images) the section is left out, the rest stays.
    index = read_json(out["influence"] / "influence.json")
    write_index(
        out["influence"], [e for e in index["analyses"] if e["kind"] != "pair"], n_train=200, methods={}
    )
    text = run_report.build("synthetic run", "test", out, CFG, 0, _loader, _loader)
    assert "Fig. 3" not in text and "Confusion group 0" in text


def test_table1_rows(tmp_path: Path) -> None:
    sec = _section(run_report.build("r", "", _outputs(tmp_path), CFG, 0), "tables")
    assert "Table 1 (this run)" in sec and "<td>1.23E-02</td><td>4.56E-02</td><td>ok</td>" in sec
    assert "<td></td><td></td><td>not enough</td>" in sec  # no improvement / p-value: empty cells


def test_markdown_table() -> None:
    md = markdown(pd.DataFrame({"a": ["x|y"], "b": [0.5], "c": [float("nan")]}))
    assert md.splitlines() == ["| a | b | c |", "|---|---|---|", "| x\\|y | 0.5000 |  |"]


def _screenshot_module():
    spec = importlib.util.spec_from_file_location(
        "screenshot_report", ROOT / "scripts" / "screenshot_report.py"
    )
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
    assert result["images"] >= 70 and result["broken"] == 0
    assert result["height"] > 1000  # longer than one screen
    png = Image.open(keep)
    assert png.size[0] == 1280 and png.size[1] > 1000
    assert len(np.unique(np.asarray(png.convert("L")))) > 20  # drew images, not a blank page
