"""The per-run HTML report: whatever the run's stages produced, in the data set's class names, with
every image embedded.

Sections (each only when its stage ran): model metrics; the first confusion pairs, each with its two
test images and, per scoring method, the most harmful and most helpful training images (paper
Fig. 3); the confusion groups, named by their classes, with their most influential training images;
detection curves (Fig. 2); relabel cards (Algorithm 1, Fig. 5): the query, its current and suggested
class, the nearest voting neighbours with their weights, and examples of both classes; the field
study (Table 5); this run's rows of Tables 1-3, Table 1 also as a chart.

Every image is captioned with its class name (training images by the label training saw, test images
by their test class), ``train #i`` / ``test #i`` (the index in the embed stage's arrays) and its path
relative to the data set root (also the tooltip); known flipped training labels are marked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from eif import pages
from eif.influence.artifacts import Analysis, Influence
from eif.mislabel import detect, knn, survey
from eif.report import figures, html
from eif.report.html import Figure
from eif.report.samples import Samples, load_samples
from eif.tables.format import fmt
from eif.utils.io import read_json

ImageLoader = Callable[[int], Image.Image]
Section = dict[str, Any]  # ``kind`` (its template, report/<kind>.html), ``title`` and the template's fields


@dataclass(frozen=True)
class Gallery:
    """Captioned training and test images of one run at ``px`` pixels. Without loaders (data without
    images, e.g. feature vectors) each image is replaced by the sample's path or ``index:<i>``."""

    samples: Samples
    train_load: ImageLoader | None
    test_load: ImageLoader | None
    px: int

    def _uri(self, load: ImageLoader | None, i: int, px: int) -> str | None:
        return None if load is None else pages.data_uri(html.pil_png(load(i), px))

    def train(self, i: int, extra: tuple[tuple[str, str], ...] = (), css: str = "", px: int = 0) -> Figure:
        """Training image ``i``: its training label's class name, a flip mark (with the true class)
        when the label is a known flip, ``train #i``, the path, then ``extra`` caption lines."""
        s, i = self.samples, int(i)
        lines = [("cls", s.train_class(s.train.labels[i]))]
        if s.is_flipped(i):
            lines.append(("flip", f"flipped (true: {s.train_class(s.train.clean_labels[i])})"))
        lines.append(("ref", f"train #{i}"))
        if s.train_paths is not None:
            lines.append(("ref", s.train_ref(i)))
        px = px or self.px
        return Figure(self._uri(self.train_load, i, px), px, [*lines, *extra], css, s.train_ref(i))

    def test(self, i: int, role: str = "test", px: int = 0) -> Figure:
        """Test image ``i`` with its test class name, ``<role> #i`` and path."""
        s, i = self.samples, int(i)
        lines = [("cls", s.test_class(s.test_labels[i])), ("ref", f"{role} #{i}")]
        if s.test_paths is not None:
            lines.append(("ref", s.test_ref(i)))
        px = px or self.px
        return Figure(self._uri(self.test_load, i, px), px, lines, "query", s.test_ref(i))


def _ranked(g: Gallery, an: Analysis, k: int, top_k: int) -> dict[str, Any]:
    """Confusion ``k``'s ``top_k`` most harmful and most helpful training images of ``an``, side by side."""
    sides = []
    for side, css, what in (
        ("harmful", "harm", "pull the pair together"),
        ("helpful", "help", "push it apart"),
    ):
        items = [
            g.train(i, (("score", f"{an.method.upper()} {an.scores[k, i]:+.3g} · {side} #{r}"),), css)
            for r, i in enumerate(an.ranked(k, side, top_k), start=1)
        ]
        sides.append({"side": side, "what": what, "figures": items})
    return {"method": an.method.upper(), "sides": sides}


def metrics_section(evaluate_dir: Path) -> Section:
    m = read_json(evaluate_dir / "metrics.json")
    return {
        "kind": "metrics",
        "title": "Model metrics (test classes)",
        "table": pages.cells(pd.DataFrame([m])),
    }


def pairs_section(g: Gallery, influence: Influence, n_pairs: int, top_k: int) -> Section | None:
    """Paper Fig. 3: the first ``n_pairs`` confusion pairs, each with its two test images, d and, per
    scoring method, the ``top_k`` most harmful and most helpful training images. None when the
    influence stage scored no pairs."""
    analyses = [influence.get("pair", m) for m in influence.methods if influence.has("pair", m)]
    if not analyses:
        return None
    s = g.samples
    k_all = len(analyses[0].d0)
    cards = []
    for k in range(min(n_pairs, k_all)):
        a, b = (int(x) for x in analyses[0].pairs[k][0])
        cards.append(
            {
                "number": k + 1,
                "a": a,
                "b": b,
                "a_class": s.test_class(s.test_labels[a]),
                "b_class": s.test_class(s.test_labels[b]),
                "d": f"{float(analyses[0].d0[k]):.4f}",
                "tests": [g.test(a, "test", g.px * 3 // 2), g.test(b, "1-NN", g.px * 3 // 2)],
                "ranked": [_ranked(g, an, k, top_k) for an in analyses],
            }
        )
    return {"kind": "pairs", "title": "Top confusion pairs (Fig. 3)", "total": k_all, "cards": cards}


def group_titles(samples: Samples, mine_dir: Path) -> list[tuple[str, str]]:
    """Per confusion group of the mine stage: its title (``Sneaker confused with Sandal``) and one
    line on what it holds."""
    with np.load(Path(mine_dir) / "mine.npz") as z:
        cls, off = z["group_class"], z["group_pair_offsets"]
        conf, coff, d = z["group_confused"], z["group_confused_offsets"], z["group_d"]
    out = []
    for k, c in enumerate(cls):
        name = samples.test_class(c)
        others = [samples.test_class(x) for x in conf[coff[k] : coff[k + 1]]]
        out.append(
            (
                f"{name} confused with {', '.join(others)}",
                f"{off[k + 1] - off[k]} {name} test images whose nearest test neighbour is labelled "
                f"{' or '.join(others)}; mean d = {float(d[k]):.4f}.",
            )
        )
    return out


def groups_sections(
    g: Gallery, influence: Influence, mine_dir: Path, detect_group: int, n_groups: int, top_k: int
) -> list[Section]:
    """One section per confusion group (the first ``n_groups`` and the detect group), named by its
    classes: three of its test pairs and each method's most harmful and helpful training images."""
    if "group" not in influence.kinds():
        return []
    analyses = [influence.get("group", m) for m in influence.methods if influence.has("group", m)]
    titles = group_titles(g.samples, mine_dir)
    shown = sorted({*range(min(n_groups, len(titles))), detect_group} & set(range(len(titles))))
    out = []
    for k in shown:
        title, text = titles[k]
        if k == detect_group:
            text += " The detect and relabel stages rank the training set by this group."
        pairs = analyses[0].pairs[k][:3]
        out.append(
            {
                "kind": "group",
                "title": f"Group {k + 1}: {title}",
                "text": text,
                "tests": [(g.test(a, "test"), g.test(b, "1-NN")) for a, b in pairs],
                "ranked": [_ranked(g, an, k, top_k) for an in analyses],
            }
        )
    return out


def detection_section(detect_dir: Path, samples: Samples) -> Section:
    """Fig. 2 from the detect stage's rankings: the curves (drawn here) and their areas and recalls."""
    info = read_json(detect_dir / "detect.json")
    section: Section = {"kind": "detection", "title": "Mislabel detection (Fig. 2)"}
    if info["skipped"]:
        return {**section, "skipped": str(info["reason"])}
    with np.load(detect_dir / "rankings.npz") as z:
        rankings = {name: z[name] for name in z.files}
    n = info["n_train"]
    table, curves = detect.summarise(rankings, samples.train.flipped, n)
    png = figures.detection_curves(curves, dict(zip(table.ranking, table.area)), f"{info['n_flipped']} flips")
    return {
        **section,
        "skipped": "",
        "n_flipped": info["n_flipped"],
        "n": n,
        "chart": html.chart(png, "detection curves", 640),
        "table": pages.cells(table, "{:.3f}"),
    }


def neighbour_shares(nbrs: knn.Neighbours) -> np.ndarray:
    """Each neighbour's share (Q, k) of its query's vote: Algorithm 1's weights exp(-d), normalised
    per row, computed by :func:`knn.weighted_votes` with every neighbour as its own class."""
    q, k = nbrs.indices.shape
    own = knn.Neighbours(np.tile(np.arange(k), (q, 1)), nbrs.distances)
    return knn.weighted_votes(own, np.arange(k), k)


def nearest_of_class(
    emb: np.ndarray, labels: np.ndarray, query: int, c: int, skip: set[int], n: int
) -> list[int]:
    """The ``n`` training samples labelled ``c`` nearest to ``query`` (Euclidean), except ``skip``."""
    idx = np.flatnonzero(labels == c)
    order = idx[np.argsort(np.linalg.norm(emb[idx] - emb[query], axis=1), kind="stable")]
    return [int(i) for i in order if int(i) not in skip][:n]


RELABEL_TITLE = "Relabel suggestions (Algorithm 1, Fig. 5)"


def relabel_section(
    g: Gallery, relabel_dir: Path, n_show: int, n_neighbours: int, n_examples: int
) -> Section:
    """Cards for the first ``n_show`` suggestions that change a label (most harmful first): the query,
    its current and suggested class and probability, the vote over all k neighbours and the nearest
    ``n_neighbours`` with their weights, and ``n_examples`` of the current and of the suggested class
    (the ones nearest to the query), known flips marked."""
    s = g.samples
    info = read_json(relabel_dir / "relabel.json")
    review = pd.read_csv(relabel_dir / "review.csv")
    acc = info["accuracy"]
    section: Section = {
        "kind": "relabel",
        "title": RELABEL_TITLE,
        "n_queries": info["n_queries"],
        "queries": info["queries"],
        "method": info["method"].upper(),
        "k": info["k"],
        "changes": info["changes_label"],
        "accuracy": (
            {
                "flips": acc["flips_in_set"],
                "strict": f"{acc['strict']:.1%}",
                "second": f"{acc['second_label']:.1%}",
            }
            if acc["flips_in_set"]
            else None
        ),
        "cards": [],
    }
    rows = review[review.changes_label].head(n_show)
    if rows.empty:
        return section
    tr = s.train
    ids = rows.sample_id.to_numpy(np.int64)
    nbrs = knn.train_neighbours(tr.embeddings, int(info["k"]), ids)
    votes = knn.weighted_votes(nbrs, tr.labels, len(s.train_class_names))
    shares = neighbour_shares(nbrs)
    for q, row in enumerate(pd.DataFrame(rows).to_dict("records")):
        i, cur, sug = int(row["sample_id"]), int(row["current_label"]), int(row["recommended_label"])
        top = np.argsort(-votes[q], kind="stable")[:3]
        query = g.train(
            i,
            (
                ("score", f"suggested: {s.train_class(sug)} (p = {row['probability']:.2f})"),
                ("score", f"{info['method'].upper()} score {row['score']:+.3g}"),
            ),
            "query",
            g.px * 3 // 2,
        )
        near = nbrs.indices[q, :n_neighbours]
        skip = {i, *near.tolist()}
        section["cards"].append(
            {
                "id": i,
                "current": s.train_class(cur),
                "suggested": s.train_class(sug),
                "query": query,
                "votes": ", ".join(
                    f"{s.train_class(c)} {votes[q, c]:.0%}" for c in top if votes[q, c] >= 0.005
                ),
                "neighbours": [
                    g.train(
                        j, (("score", f"neighbour {r}: weight {shares[q, r - 1]:.1%}"),), "nbr", g.px * 2 // 3
                    )
                    for r, j in enumerate(near, start=1)
                ],
                "examples": [
                    {
                        "role": role,
                        "name": s.train_class(c),
                        "figures": [
                            g.train(j, (), "ex", g.px * 2 // 3)
                            for j in nearest_of_class(tr.embeddings, tr.labels, i, c, skip, n_examples)
                        ],
                    }
                    for c, role in ((cur, "current"), (sug, "suggested"))
                ],
            }
        )
    return section


def survey_section(survey_dir: Path, samples: Samples) -> Section:
    """Table 5 with its category counts as a chart, and the per-class details in class names."""
    t5 = pd.read_csv(survey_dir / "table5.csv")
    counts = {c: int(t5[c].iloc[0]) for c in survey.CATEGORIES}
    classes = pd.read_csv(survey_dir / "classes.csv")
    classes["class"] = [samples.train_class(c) for c in classes["class"]]
    classes["top_other"] = [samples.train_class(c) if c >= 0 else "" for c in classes["top_other"]]
    return {
        "kind": "survey",
        "title": "Field study (Table 5)",
        "table5": pages.cells(t5),
        "chart": html.chart(
            figures.bar_counts(counts, "training classes by relabel pattern"), "Table 5 counts", 420
        ),
        "classes": pages.cells(classes),
    }


def table1_block(stats_dir: Path) -> dict[str, Any]:
    """This run's Table 1 rows (stats stage): the compared methods, a chart when any row has a value,
    and the table in the paper's number style (as table1.md; a missing value is an empty cell)."""
    record = read_json(Path(stats_dir) / "stats.json")
    rows = record["rows"]
    a, b = (m.upper() for m in record["compared"])
    t1 = pd.DataFrame(rows, columns=["kind", "test", "n", "available", "improvement", "pvalue", "status"])
    t1[["improvement", "pvalue"]] = t1[["improvement", "pvalue"]].map(fmt)
    chart = (
        html.chart(figures.table1_chart(rows, record["compared"]), "Table 1 chart", 720)
        if any(r["improvement"] is not None for r in rows)
        else None
    )
    return {"a": a, "b": b, "chart": chart, "table": pages.cells(t1)}


def tables_section(relabel_dir: Path | None, stats_dir: Path | None) -> Section | None:
    """Table 1 rows of this run (stats stage) as a chart and a table, and the Table 2/3 rows (relabel)."""
    section: Section = {"kind": "tables", "title": "Tables", "table1": None, "table2": None, "table3": None}
    if stats_dir is not None:
        section["table1"] = table1_block(stats_dir)
    if relabel_dir is not None:
        acc = read_json(relabel_dir / "relabel.json")["accuracy"]
        if acc["flips_in_set"]:
            section["table2"] = pages.cells(pd.DataFrame([acc]))
        section["table3"] = pages.cells(pd.read_csv(relabel_dir / "runtime.csv"), "{:.2f}")
    return section if stats_dir is not None or relabel_dir is not None else None


def build(
    title: str,
    subtitle: str,
    outputs: dict[str, Path],
    cfg_report: dict[str, Any],
    group: int,
    train_load: ImageLoader | None = None,
    test_load: ImageLoader | None = None,
) -> str:
    """The report page for a run whose stage outputs are ``outputs`` ({stage: artifact dir});
    ``train_load`` / ``test_load`` give the raw image i of the training / test set (None: data
    without images, each shown by its path or ``index:<i>``)."""
    samples = load_samples(outputs["embed"]) if "embed" in outputs else None
    g = Gallery(samples, train_load, test_load, int(cfg_report["thumb_px"])) if samples is not None else None
    top_k = int(cfg_report["top_k"])
    sections: list[Section | None] = []
    if "evaluate" in outputs:
        sections.append(metrics_section(outputs["evaluate"]))
    if g is not None and "influence" in outputs:
        influence = Influence(outputs["influence"])
        sections.append(pairs_section(g, influence, int(cfg_report["pairs"]), top_k))
        if "mine" in outputs:
            sections += groups_sections(
                g, influence, outputs["mine"], group, int(cfg_report["groups"]), top_k
            )
    if "detect" in outputs and samples is not None:
        sections.append(detection_section(outputs["detect"], samples))
    if g is not None and "relabel" in outputs:
        sections.append(
            relabel_section(
                g,
                outputs["relabel"],
                int(cfg_report["suggestions"]),
                int(cfg_report["neighbours"]),
                int(cfg_report["class_examples"]),
            )
        )
    if "survey" in outputs and samples is not None:
        sections.append(survey_section(outputs["survey"], samples))
    sections.append(tables_section(outputs.get("relabel"), outputs.get("stats")))
    shown = [s for s in sections if s is not None]
    return pages.render(
        "report.html", title=title, subtitle=subtitle, nav=[s["title"] for s in shown], sections=shown
    )


def influence_table(
    embed_dir: Path,
    influence_dir: Path,
    n_pairs: int,
    top_k: int,
    train_load: ImageLoader | None,
    test_load: ImageLoader | None,
    px: int,
) -> pd.DataFrame:
    """The report's confusion pairs as one long table for W&B: per pair, method, side and rank, the two
    test images and the training image (PIL thumbnails of ``px``; no image columns without loaders)
    with classes, score and path."""
    s = load_samples(embed_dir)
    influence = Influence(influence_dir)
    rows = []
    for method in influence.methods:
        if not influence.has("pair", method):
            continue
        an = influence.get("pair", method)
        for k in range(min(n_pairs, len(an.d0))):
            a, b = (int(x) for x in an.pairs[k][0])
            tests: dict[str, Any] = {"pair": k + 1, "d": float(an.d0[k])}
            if test_load is not None:
                tests["test_image"] = html.thumbnail(test_load(a), px)
            tests["test_class"] = s.test_class(s.test_labels[a])
            if test_load is not None:
                tests["neighbour_image"] = html.thumbnail(test_load(b), px)
            tests["neighbour_class"] = s.test_class(s.test_labels[b])
            for side in ("harmful", "helpful"):
                for r, i in enumerate(map(int, an.ranked(k, side, top_k)), start=1):
                    row = {**tests, "method": method, "side": side, "rank": r, "train_id": int(i)}
                    if train_load is not None:
                        row["train_image"] = html.thumbnail(train_load(int(i)), px)
                    rows.append(
                        {
                            **row,
                            "train_class": s.train_class(s.train.labels[i]),
                            "true_class": s.train_class(s.train.clean_labels[i]),
                            "flipped": s.is_flipped(i),
                            "score": float(an.scores[k, i]),
                            "path": s.train_ref(i),
                        }
                    )
    return pd.DataFrame(rows)
