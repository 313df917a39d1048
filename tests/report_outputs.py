"""Stage-shaped outputs of a tiny noisy run (4 training classes, 200 samples, 20 flipped labels, 40
test images of 4 test classes), for the report and review page tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from eif.influence.artifacts import write_analysis, write_index
from eif.mislabel import detect, knn, relabel, survey
from eif.report import figures
from eif.tables.format import write_table
from eif.utils.io import save_npz, write_bytes, write_json, write_text

TRAIN_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress"]
TEST_CLASSES = ["Sandal", "Shirt", "Sneaker", "Ankle boot"]
TEST_IDS = np.array([5, 6, 7, 9])  # data-set class ids of the test classes, as Fashion-MNIST's
PAIRS = np.array([[0, 12], [15, 31], [22, 5]])  # three confusion pairs of test indices
CFG = {
    "pairs": 2,
    "top_k": 5,
    "groups": 5,
    "suggestions": 4,
    "neighbours": 6,
    "class_examples": 3,
    "thumb_px": 64,
}


def class_of_test(i: int) -> str:
    """The class name of test image ``i`` (10 per class)."""
    return TEST_CLASSES[i // 10]


def make_outputs(tmp: Path, paths: bool = False) -> dict[str, Path]:
    """Every stage's output dir under ``tmp``; ``paths``: image files (``cls/img_<i>.png``) instead of
    in-memory data."""
    rng = np.random.default_rng(0)
    n, c = 200, 4
    clean = np.repeat(np.arange(c), n // c)
    emb = (np.eye(c)[clean] * 5 + rng.normal(size=(n, c))).astype(np.float32)
    flipped = np.sort(rng.choice(n, 20, replace=False))
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + 1) % c
    d = {
        k: tmp / k for k in ("evaluate", "embed", "mine", "influence", "detect", "relabel", "survey", "stats")
    }
    save_npz(
        d["embed"] / "train.npz",
        features=emb,
        embeddings=emb,
        labels=noisy,
        clean_labels=clean,
        flipped=flipped,
    )
    test_labels = np.repeat(TEST_IDS, 10)
    save_npz(
        d["embed"] / "test.npz",
        features=emb[:40],
        embeddings=emb[:40],
        labels=test_labels,
        clean_labels=test_labels,
    )
    write_json(
        d["embed"] / "embed.json",
        {
            "sizes": {"train": n, "test": 40},
            "train_class_names": TRAIN_CLASSES,
            "test_class_names": TEST_CLASSES,
            "paths": {
                "train": [f"{TRAIN_CLASSES[y].replace('/', '_')}/img_{i}.png" for i, y in enumerate(clean)]
                if paths
                else None,
                "test": [f"test/img_{i}.png" for i in range(40)] if paths else None,
            },
        },
    )
    save_npz(
        d["mine"] / "mine.npz",
        group_class=np.array([6]),
        group_pair_offsets=np.array([0, 3]),
        group_pairs=PAIRS,
        group_confused=np.array([5, 9]),
        group_confused_offsets=np.array([0, 2]),
        group_d=np.array([0.2]),
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
            "compared": ["eif", "if"],
            "job": {},
        },
    )
    write_json(d["evaluate"] / "metrics.json", {"recall@1": 0.81, "nmi": 0.62})
    ranks = {"eif": detect.descending(eif), "random": detect.random_ranking(n, 0)}
    table, curves = detect.summarise(ranks, flipped, n)
    save_npz(d["detect"] / "rankings.npz", **ranks)
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
            "method": "eif",
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
    det["category"] = survey.categorise(det)
    t5 = survey.table5(det, det.category)
    write_table(t5, d["survey"], "table5")
    write_text(d["survey"] / "classes.csv", det.to_csv(index=False))
    counts = {x: int(t5[x].iloc[0]) for x in survey.CATEGORIES}
    write_bytes(d["survey"] / "table5.png", figures.bar_counts(counts, "synthetic"))
    return d


def loader(i: int) -> Image.Image:
    """A random 28 x 28 grayscale image, the same for the same ``i``."""
    rng = np.random.default_rng(i)
    return Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8), mode="L")


def rgb_loader(i: int) -> Image.Image:
    """A random 300 x 200 colour photo-like image (smooth gradients plus noise)."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:200, 0:300]
    base = np.stack([x * 255 / 300, y * 255 / 200, np.full_like(x, (i * 37) % 255)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8), mode="RGB")
