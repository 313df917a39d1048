"""End to end on Fashion-MNIST with 10% noise and an offline W&B run: the report speaks in class names
and holds the relabel cards, the review page lists the suggestions, the W&B tables hold images under
one key each, and every console line is printed once."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import launch
from tests.test_wandb_tables import image_cells, logged_keys, staged_tables

FMNIST = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
LOG_PREFIX = re.compile(r"^\[[^\]]+\]\[[^\]]+\]\[[A-Z]+\] - ")


@pytest.mark.slow
def test_mislabel_run_report_review_and_wandb(tmp_path: Path, fmnist_available: None) -> None:
    proc = launch(
        ["experiment=fmnist_mislabel", "methods.if.solver.scale=auto", "logger=wandb"], tmp_path, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "run"

    # Console: no line twice (a log line counts by its message, without the logging prefix).
    lines = [LOG_PREFIX.sub("", line) for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    twice = {line: n for line, n in Counter(lines).items() if n > 1}
    assert not twice, twice

    text = (run / "report.html").read_text()
    captions = [
        re.findall(r"<span[^>]*>(.*?)</span>", c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", text)
    ]
    assert len(captions) > 50
    assert all(html.unescape(c[0]) in FMNIST for c in captions)  # every image named by its class
    shown = {html.unescape(c[0]) for c in captions}
    assert {"Sandal", "Ankle boot"} <= shown and shown & {
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
    }
    assert re.search(r"<h2>Group 1: (Sandal|Shirt|Sneaker|Bag|Ankle boot) confused with", text)

    section = re.search(r'<section id="relabel-suggestions[^"]*">(.*?)</section>', text, re.S)
    assert section is not None
    cards = re.findall(
        r'<div class="card" data-id="(\d+)">(.*?)(?=<div class="card"|$)', section.group(1), re.S
    )
    assert cards
    for _, card in cards:
        assert card.count('<figure class="query"') == 1
        assert card.count('<figure class="nbr"') == 8  # report.neighbours of the k voting neighbours
        assert "(current class)" in card and "(suggested class)" in card
        assert card.count('<figure class="ex"') == 2 * 4  # report.class_examples of each class
        assert "weight" in card and "votes over all k" in card
    assert "flipped (true: " in section.group(1)

    page = (run / "review.html").read_text()
    data = json.loads(
        re.search(r'<script id="review-data" type="application/json">(.*?)</script>', page, re.S)[1]
    )
    assert data["classes"] == FMNIST[:5] and data["methods"] == ["eif", "if"]
    assert data["rows"] and all(r["label"] != r["suggested"] for r in data["rows"])
    assert all(r["path"] == f"index:{r['id']}" for r in data["rows"])

    keys = logged_keys(run)
    assert len(keys) == len(set(keys)), Counter(keys).most_common(3)
    assert {"relabel/review", "report/influence", "survey/table5", "survey/table5_counts"} <= set(keys)
    review = staged_tables(run, ["sample_id", "thumbnail", "current_class", "recommended_class"])
    assert review and len(image_cells(*review[0], "thumbnail")) == len(review[0][0]["data"]) > 0
    influence = staged_tables(run, ["test_image", "neighbour_image", "train_image", "train_class", "score"])
    assert influence
    table, files = influence[0]
    for column in ("test_image", "neighbour_image", "train_image"):
        assert len(image_cells(table, files, column)) == len(table["data"]) > 0
    j = table["columns"].index("train_class")
    assert {row[j] for row in table["data"]} <= set(FMNIST[:5])
