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

from eif.influence.artifacts import Analysis, Influence
from eif.mislabel import detect, knn, survey
from eif.report import figures, html
from eif.report.samples import Samples, load_samples
from eif.tables.format import fmt
from eif.utils.io import read_json

ImageLoader = Callable[[int], Image.Image]


@dataclass(frozen=True)
class Gallery:
    """Renders captioned training and test images of one run at ``px`` pixels."""

    samples: Samples
    train_load: ImageLoader
    test_load: ImageLoader
    px: int

    def train(self, i: int, extra: tuple[tuple[str, str], ...] = (), css: str = "", px: int = 0) -> str:
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
        return html.sample_figure(
            html.pil_png(self.train_load(i), px), px, [*lines, *extra], css, s.train_ref(i)
        )

    def test(self, i: int, role: str = "test", px: int = 0) -> str:
        """Test image ``i`` with its test class name, ``<role> #i`` and path."""
        s, i = self.samples, int(i)
        lines = [("cls", s.test_class(s.test_labels[i])), ("ref", f"{role} #{i}")]
        if s.test_paths is not None:
            lines.append(("ref", s.test_ref(i)))
        px = px or self.px
        return html.sample_figure(html.pil_png(self.test_load(i), px), px, lines, "query", s.test_ref(i))


def _grid(items: list[str]) -> str:
    return '<div class="grid">' + "".join(items) + "</div>" if items else "<p class=muted>none</p>"


def _ranked(g: Gallery, an: Analysis, k: int, top_k: int) -> str:
    """Confusion ``k``'s ``top_k`` most harmful and most helpful training images of ``an``, side by side."""
    out = []
    for side, css, what in (
        ("harmful", "harm", "pull the pair together"),
        ("helpful", "help", "push it apart"),
    ):
        items = [
            g.train(i, (("score", f"{an.method.upper()} {an.scores[k, i]:+.3g} · {side} #{r}"),), css)
            for r, i in enumerate(an.ranked(k, side, top_k), start=1)
        ]
        out.append(
            f'<div><div class="label">{an.method.upper()}: most {side} ({what})</div>{_grid(items)}</div>'
        )
    return f'<div class="row">{"".join(out)}</div>'


Section = tuple[str, str]  # (title, body HTML)


def metrics_section(evaluate_dir: Path) -> Section:
    m = read_json(evaluate_dir / "metrics.json")
    return "Model metrics (test classes)", html.table(pd.DataFrame([m]))


def pairs_section(g: Gallery, influence: Influence, n_pairs: int, top_k: int) -> Section | None:
    """Paper Fig. 3: the first ``n_pairs`` confusion pairs, each with its two test images, d and, per
    scoring method, the ``top_k`` most harmful and most helpful training images. None when the
    influence stage scored no pairs."""
    analyses = [influence.get("pair", m) for m in influence.methods if influence.has("pair", m)]
    if not analyses:
        return None
    s = g.samples
    k_all = len(analyses[0].d0)
    body = [
        f"<p>The first {min(n_pairs, k_all)} of {k_all} confusion pairs: a test image whose nearest "
        "test neighbour has another class. d = 2 − 2 cos of their embeddings. Training images are "
        "ranked by their influence on d per method (positive = harmful: pulls the pair together; "
        "negative = helpful) and captioned with the class training saw.</p>"
    ]
    for k in range(min(n_pairs, k_all)):
        a, b = (int(x) for x in analyses[0].pairs[k][0])
        ca, cb = s.test_class(s.test_labels[a]), s.test_class(s.test_labels[b])
        body.append(
            f'<div class="card"><h3>Pair {k + 1}: {html.esc(ca)} (test #{a}), whose nearest test '
            f"neighbour is labelled {html.esc(cb)} (test #{b}); d = {float(analyses[0].d0[k]):.4f}</h3>"
            f'<div class="row">{g.test(a, "test", g.px * 3 // 2)}{g.test(b, "1-NN", g.px * 3 // 2)}</div>'
            f"{''.join(_ranked(g, an, k, top_k) for an in analyses)}</div>"
        )
    return "Top confusion pairs (Fig. 3)", "".join(body)


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
        tests = [f'<div class="pair">{g.test(a, "test")}{g.test(b, "1-NN")}</div>' for a, b in pairs]
        body = (
            f"<p>{html.esc(text)}</p><div class=label>the first {len(tests)} test pairs</div>{_grid(tests)}"
            + "".join(_ranked(g, an, k, top_k) for an in analyses)
        )
        out.append((f"Group {k + 1}: {title}", body))
    return out


def detection_section(detect_dir: Path, samples: Samples) -> Section:
    """Fig. 2 from the detect stage's rankings: the curves (drawn here) and their areas and recalls."""
    info = read_json(detect_dir / "detect.json")
    title = "Mislabel detection (Fig. 2)"
    if info["skipped"]:
        return title, f"<p class=muted>Skipped: {html.esc(info['reason'])}</p>"
    with np.load(detect_dir / "rankings.npz") as z:
        rankings = {name: z[name] for name in z.files}
    n = info["n_train"]
    table, curves = detect.summarise(rankings, samples.train.flipped, n)
    png = figures.detection_curves(curves, dict(zip(table.ranking, table.area)), f"{info['n_flipped']} flips")
    return (
        title,
        f"<p>{info['n_flipped']} of {n} training labels are flipped. Each curve is the fraction of "
        "them found when inspecting the training set in that ranking's order. Area under the curve "
        "(1 = all flips first, about 0.5 = random) and recall after inspecting 10/20/50%.</p>"
        + html.img(png, "detection curves", 640)
        + html.table(table, "{:.3f}"),
    )


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
    text = (
        f"<p>{info['n_queries']} {info['queries']} training samples (flagged by "
        f"{info['method'].upper()}) queried with the weighted kNN over k = {info['k']} neighbours; "
        f"{info['changes_label']} would change label."
    )
    if acc["flips_in_set"]:
        text += (
            f" On the {acc['flips_in_set']} truly flipped samples among them, the suggestion is the "
            f"true class for {acc['strict']:.1%} (strict top-1) and {acc['second_label']:.1%} (the "
            "reference's rule: when top-1 is the current label, the 2nd label counts)."
        )
    text += (
        ' Accept, reject or change each suggestion and export the corrected labels in <a href="review.html">'
        "review.html</a> (next to this report).</p>"
    )
    rows = review[review.changes_label].head(n_show)
    if rows.empty:
        return RELABEL_TITLE, text + "<p class=muted>No queried sample would change its label.</p>"
    tr = s.train
    ids = rows.sample_id.to_numpy(np.int64)
    nbrs = knn.train_neighbours(tr.embeddings, int(info["k"]), ids)
    votes = knn.weighted_votes(nbrs, tr.labels, len(s.train_class_names))
    shares = neighbour_shares(nbrs)
    cards = []
    for q, row in enumerate(rows.itertuples(index=False)):
        i, cur, sug = int(row.sample_id), int(row.current_label), int(row.recommended_label)
        top = np.argsort(-votes[q], kind="stable")[:3]
        vote_text = ", ".join(f"{s.train_class(c)} {votes[q, c]:.0%}" for c in top if votes[q, c] >= 0.005)
        query = g.train(
            i,
            (
                ("score", f"suggested: {s.train_class(sug)} (p = {row.probability:.2f})"),
                ("score", f"{info['method'].upper()} score {row.score:+.3g}"),
            ),
            "query",
            g.px * 3 // 2,
        )
        near = nbrs.indices[q, :n_neighbours]
        neighbours = [
            g.train(j, (("score", f"neighbour {r}: weight {shares[q, r - 1]:.1%}"),), "nbr", g.px * 2 // 3)
            for r, j in enumerate(near, start=1)
        ]
        skip = {i, *near.tolist()}
        examples = []
        for c, role in ((cur, "current"), (sug, "suggested")):
            ex = [
                g.train(j, (), "ex", g.px * 2 // 3)
                for j in nearest_of_class(tr.embeddings, tr.labels, i, c, skip, n_examples)
            ]
            examples.append(
                f'<div class="{role}"><div class="label">{html.esc(s.train_class(c))} ({role} class): the '
                f"{len(ex)} nearest other examples</div>{_grid(ex)}</div>"
            )
        cards.append(
            f'<div class="card" data-id="{i}"><h3>train #{i}: {html.esc(s.train_class(cur))} → '
            f"{html.esc(s.train_class(sug))}?</h3>"
            f'<div class="row">{query}<div><div class="label">The {len(near)} nearest of the '
            f'k = {info["k"]} voting neighbours</div><p class="votes">votes over all k: '
            f'{html.esc(vote_text)}</p>{_grid(neighbours)}<div class="row">{"".join(examples)}</div>'
            "</div></div></div>"
        )
    return RELABEL_TITLE, text + "".join(cards)


def survey_section(survey_dir: Path, samples: Samples) -> Section:
    """Table 5 with its category counts as a chart, and the per-class details in class names."""
    t5 = pd.read_csv(survey_dir / "table5.csv")
    counts = {c: int(t5[c].iloc[0]) for c in survey.CATEGORIES}
    classes = pd.read_csv(survey_dir / "classes.csv")
    classes["class"] = [samples.train_class(c) for c in classes["class"]]
    classes["top_other"] = [samples.train_class(c) if c >= 0 else "" for c in classes["top_other"]]
    return (
        "Field study (Table 5)",
        html.table(t5)
        + html.img(figures.bar_counts(counts, "training classes by relabel pattern"), "Table 5 counts", 420)
        + "<div class=label>Per training class: share p suggested to change, the most frequent other "
        "suggested class</div>" + html.table(classes),
    )


def table1_block(stats_dir: Path) -> str:
    record = read_json(Path(stats_dir) / "stats.json")
    rows = record["rows"]
    a, b = (m.upper() for m in record["compared"])
    t1 = pd.DataFrame(rows, columns=["kind", "test", "n", "available", "improvement", "pvalue", "status"])
    # The paper's number style (as table1.md); a missing value is an empty cell.
    t1[["improvement", "pvalue"]] = t1[["improvement", "pvalue"]].map(fmt)
    chart = (
        html.img(figures.table1_chart(rows, record["compared"]), "Table 1 chart", 720)
        if any(r["improvement"] is not None for r in rows)
        else ""
    )
    return (
        f"<div class=label>Table 1 (this run): mean Δd_{a} − Δd_{b} over the first n confusions, "
        f"one-sided p-value of H1 Δd_{a} &gt; Δd_{b}</div>{chart}{html.table(t1)}"
    )


def tables_section(relabel_dir: Path | None, stats_dir: Path | None) -> Section | None:
    """Table 1 rows of this run (stats stage) as a chart and a table, and the Table 2/3 rows (relabel)."""
    body = []
    if stats_dir is not None:
        body.append(table1_block(stats_dir))
    if relabel_dir is not None:
        acc = read_json(relabel_dir / "relabel.json")["accuracy"]
        if acc["flips_in_set"]:
            body.append(
                "<div class=label>Table 2 (this run): relabel accuracy</div>"
                + html.table(pd.DataFrame([acc]))
            )
        body.append(
            "<div class=label>Table 3 (this run): runtime in seconds</div>"
            + html.table(pd.read_csv(relabel_dir / "runtime.csv"), "{:.2f}")
        )
    return ("Tables", "".join(body)) if body else None


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
    ``train_load`` / ``test_load`` give the raw image i of the training / test set (sections with
    images are left out without them)."""
    samples = load_samples(outputs["embed"]) if "embed" in outputs else None
    g = (
        Gallery(samples, train_load, test_load, int(cfg_report["thumb_px"]))
        if samples is not None and train_load is not None and test_load is not None
        else None
    )
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
    if not shown:
        return html.page(
            title, ["<p class=muted>No stage of this run produced anything to show.</p>"], subtitle
        )
    return html.page(title, [html.section(t, b) for t, b in shown], subtitle, [t for t, _ in shown])


def influence_table(
    embed_dir: Path,
    influence_dir: Path,
    n_pairs: int,
    top_k: int,
    train_load: ImageLoader,
    test_load: ImageLoader,
    px: int,
) -> pd.DataFrame:
    """The report's confusion pairs as one long table for W&B: per pair, method, side and rank, the two
    test images and the training image (PIL thumbnails of ``px``) with classes, score and path."""
    s = load_samples(embed_dir)
    influence = Influence(influence_dir)
    rows = []
    for method in influence.methods:
        if not influence.has("pair", method):
            continue
        an = influence.get("pair", method)
        for k in range(min(n_pairs, len(an.d0))):
            a, b = (int(x) for x in an.pairs[k][0])
            tests = {
                "pair": k + 1,
                "d": float(an.d0[k]),
                "test_image": html.thumbnail(test_load(a), px),
                "test_class": s.test_class(s.test_labels[a]),
                "neighbour_image": html.thumbnail(test_load(b), px),
                "neighbour_class": s.test_class(s.test_labels[b]),
            }
            for side in ("harmful", "helpful"):
                for r, i in enumerate(an.ranked(k, side, top_k), start=1):
                    rows.append(
                        {
                            **tests,
                            "method": method,
                            "side": side,
                            "rank": r,
                            "train_id": int(i),
                            "train_image": html.thumbnail(train_load(int(i)), px),
                            "train_class": s.train_class(s.train.labels[i]),
                            "true_class": s.train_class(s.train.clean_labels[i]),
                            "flipped": s.is_flipped(i),
                            "score": float(an.scores[k, i]),
                            "path": s.train_ref(i),
                        }
                    )
    return pd.DataFrame(rows)
