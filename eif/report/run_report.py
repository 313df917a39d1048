"""The per-run HTML report: whatever the run's stages produced, with every image embedded.

Sections (each only when its stage ran): model metrics; the top confusion pairs, each with its two
test images and the most harmful and most helpful training images per method (paper Fig. 3); the
detect group's most harmful and most helpful training images; detection curves (Fig. 2); relabel
suggestions with examples of the recommended class (Fig. 5); Table 5; Tables 1-3 rows of this run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from eif.influence.artifacts import Influence
from eif.mislabel.artifacts import load_train
from eif.report import html
from eif.tables.format import fmt
from eif.utils.io import read_json

ImageLoader = Callable[[int], Image.Image]


def _thumbs(load: ImageLoader, items: list[tuple[int, str]], px: int, css: str = "") -> str:
    return (
        '<div class="grid">'
        + "".join(html.figure(html.pil_png(load(int(i)), px), cap, css) for i, cap in items)
        + "</div>"
    )


def _train_caption(i: int, labels: np.ndarray, clean: np.ndarray, score: float) -> str:
    """``#i y=<training label>`` (plus the clean label when it was flipped) and the score on a second line."""
    mark = f" (clean {clean[i]})" if clean[i] != labels[i] else ""
    return f"#{i} y={labels[i]}{mark}\ns={score:+.3g}"


def metrics_section(evaluate_dir: Path) -> str:
    m = read_json(evaluate_dir / "metrics.json")
    return html.section("Model metrics (test classes)", html.table(pd.DataFrame([m])))


def pairs_section(
    embed_dir: Path,
    influence_dir: Path,
    train_load: ImageLoader,
    test_load: ImageLoader,
    n_pairs: int,
    top_k: int,
    px: int,
) -> str:
    """Paper Fig. 3: the first ``n_pairs`` mined confusion pairs, each with its two test images, d0 and,
    per method, the ``top_k`` most harmful and most helpful training images with labels and scores.
    Empty when the influence stage scored no pairs."""
    influence = Influence(influence_dir)
    analyses = [influence.get("pair", m) for m in influence.methods if influence.has("pair", m)]
    if not analyses:
        return ""
    tr = load_train(embed_dir)
    with np.load(Path(embed_dir) / "test.npz") as z:
        test_labels = z["labels"]
    first = analyses[0]
    k_all = len(first.d0)
    body = [
        f"<p>The first {min(n_pairs, k_all)} of {k_all} mined confusion pairs: a test sample and its "
        "nearest test neighbour of another class. d0 = 2 - 2 cos of their embeddings. Training images "
        "ranked by influence on d (positive = harmful: pulls the pair together; negative = helpful); "
        "y is the training label, clean marks a flipped one.</p>"
    ]
    for k in range(min(n_pairs, k_all)):
        a, b = (int(x) for x in first.pairs[k][0])
        tests = "".join(
            html.figure(html.pil_png(test_load(i), px * 3 // 2), f"{role} #{i}\nclass {test_labels[i]}")
            for i, role in ((a, "test"), (b, "1-NN"))
        )
        rows = []
        for an in analyses:
            for side, css in (("harmful", "harm"), ("helpful", "help")):
                items = [
                    (int(i), _train_caption(int(i), tr.labels, tr.clean_labels, an.scores[k, i]))
                    for i in an.ranked(k, side, top_k)
                ]
                shown = _thumbs(train_load, items, px, css) if items else "<p class=muted>none</p>"
                rows.append(f'<div class="label">{an.method.upper()} most {side}</div>{shown}')
        body.append(
            f'<div class="card"><div class="label">pair {k}: d0 = {float(first.d0[k]):.4f}</div>'
            f'<div class="grid"><div class="grid">{tests}</div><div>{"".join(rows)}</div></div>'
            "</div>"
        )
    return html.section("Top confusion pairs (Fig. 3)", "".join(body))


def influence_section(
    embed_dir: Path, influence_dir: Path, group: int, train_load: ImageLoader, top_k: int, px: int
) -> str:
    """Top-k harmful and helpful training images of the detect group, per scoring method; empty when
    the influence stage scored no groups."""
    influence = Influence(influence_dir)
    if "group" not in influence.kinds():
        return ""
    tr = load_train(embed_dir)
    body = [
        f"<p>Confusion group {group}: training samples ranked by their influence on the group's "
        "mean confusion distance (positive = harmful: pulls the confused classes together).</p>"
    ]
    for method, s in influence.group_scores(group).items():
        order = np.argsort(-s, kind="stable")
        harm = [(int(i), _train_caption(int(i), tr.labels, tr.clean_labels, s[i])) for i in order[:top_k]]
        helpf = [
            (int(i), _train_caption(int(i), tr.labels, tr.clean_labels, s[i])) for i in order[::-1][:top_k]
        ]
        body.append(
            f'<div class="card"><b>{method.upper()}</b><div class="label">most harmful</div>'
            f'{_thumbs(train_load, harm, px, "harm")}<div class="label">most helpful</div>'
            f"{_thumbs(train_load, helpf, px, 'help')}</div>"
        )
    return html.section(f"Confusion group {group}: influential training samples", "".join(body))


def detection_section(detect_dir: Path) -> str:
    info = read_json(detect_dir / "detect.json")
    if info["skipped"]:
        return html.section(
            "Mislabel detection (Fig. 2)", f"<p class=muted>Skipped: {html.esc(info['reason'])}</p>"
        )
    table = pd.read_csv(detect_dir / "detection.csv")
    return html.section(
        "Mislabel detection (Fig. 2)",
        f"<p>{info['n_flipped']} of {info['n_train']} training labels are flipped. "
        "Area under the detection curve (1 = all flips first, about 0.5 = random) "
        "and recall after inspecting 10/20/50% of the training set.</p>"
        + html.img_file(detect_dir / "detection_curves.png", "detection curves", 640)
        + html.table(table),
    )


def relabel_section(
    relabel_dir: Path, embed_dir: Path, train_load: ImageLoader, n_show: int, n_examples: int, px: int
) -> str:
    info = read_json(relabel_dir / "relabel.json")
    tr = load_train(embed_dir)
    review = pd.read_csv(relabel_dir / "review.csv")
    acc = info["accuracy"]
    text = (
        f"<p>{info['n_queries']} {info['queries']} training samples queried with the weighted kNN "
        f"(k={info['k']}); {info['changes_label']} would change label (kNN block "
        f"{info['knn_seconds']:.2f} s)."
    )
    if acc["flips_in_set"]:
        text += (
            f" On the {acc['flips_in_set']} truly flipped samples among them, the recommendation is the "
            f"clean label for {acc['strict']:.1%} (strict top-1) and {acc['second_label']:.1%} (the "
            "reference's rule: when top-1 is the current label, the 2nd label counts)."
        )
    text += "</p>"
    cards = []
    flips = set(tr.flipped.tolist())
    for row in review[review.changes_label].head(n_show).itertuples(index=False):
        same = np.flatnonzero(tr.labels == row.recommended_label)
        pick = np.linspace(0, same.size - 1, min(n_examples, same.size)).astype(int)
        examples = same[pick] if same.size else []
        cap = f"#{row.sample_id} y={row.current_label} -> {row.recommended_label} (p={row.probability:.2f})"
        if row.sample_id in flips:
            cap += f", clean {tr.clean_labels[row.sample_id]}"
        sample = html.figure(html.pil_png(train_load(row.sample_id), px), cap, "harm")
        others = _thumbs(train_load, [(int(i), f"#{i}") for i in examples], px * 2 // 3)
        cards.append(
            f'<div class="card"><div class="grid">{sample}<div><div class="label">'
            f"class {row.recommended_label} examples</div>{others}</div></div></div>"
        )
    if not cards:
        cards.append("<p class=muted>No queried sample would change its label.</p>")
    return html.section("Relabel suggestions (Algorithm 1, Fig. 5)", text + "".join(cards))


def survey_section(survey_dir: Path) -> str:
    t5 = pd.read_csv(survey_dir / "table5.csv")
    return html.section(
        "Field study (Table 5)",
        html.table(t5) + html.img_file(survey_dir / "table5.png", "Table 5 counts", 420),
    )


def tables_section(relabel_dir: Path | None, stats_dir: Path | None) -> str:
    """Table 1 rows of this run (stats stage: mean improvement of Δd_EIF over Δd_IF and one-sided
    p-values) and the Table 2/3 rows (relabel stage)."""
    body = []
    if stats_dir is not None:
        t1 = pd.DataFrame(
            read_json(Path(stats_dir) / "stats.json")["rows"],
            columns=["kind", "test", "n", "available", "improvement", "pvalue", "status"],
        )
        # The paper's number style (as table1.md); a missing value is an empty cell.
        t1[["improvement", "pvalue"]] = t1[["improvement", "pvalue"]].map(fmt)
        body.append(
            "<div class=label>Table 1 (this run): mean Δd_EIF − Δd_IF over the first n confusions, "
            "one-sided p-value of H1 Δd_EIF &gt; Δd_IF</div>" + html.table(t1)
        )
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
    return html.section("Tables", "".join(body)) if body else ""


def build(
    title: str,
    subtitle: str,
    outputs: dict[str, Path],
    cfg_report: dict,
    group: int,
    train_load: ImageLoader | None = None,
    test_load: ImageLoader | None = None,
) -> str:
    """The report page for a run whose stage outputs are ``outputs`` ({stage: artifact dir});
    ``train_load`` / ``test_load`` give the raw image i of the training / test set."""
    px = int(cfg_report["thumb_px"])
    sections = []
    if "evaluate" in outputs:
        sections.append(metrics_section(outputs["evaluate"]))
    if train_load is not None and test_load is not None and "influence" in outputs and "embed" in outputs:
        sections.append(
            pairs_section(
                outputs["embed"],
                outputs["influence"],
                train_load,
                test_load,
                int(cfg_report["pairs"]),
                int(cfg_report["top_k"]),
                px,
            )
        )
    if train_load is not None and "influence" in outputs and "embed" in outputs:
        sections.append(
            influence_section(
                outputs["embed"], outputs["influence"], group, train_load, int(cfg_report["top_k"]), px
            )
        )
    if "detect" in outputs:
        sections.append(detection_section(outputs["detect"]))
    if train_load is not None and "relabel" in outputs and "embed" in outputs:
        sections.append(
            relabel_section(
                outputs["relabel"],
                outputs["embed"],
                train_load,
                int(cfg_report["suggestions"]),
                int(cfg_report["class_examples"]),
                px,
            )
        )
    if "survey" in outputs:
        sections.append(survey_section(outputs["survey"]))
    sections.append(tables_section(outputs.get("relabel"), outputs.get("stats")))
    if not any(sections):
        sections.append("<p class=muted>No stage of this run produced anything to show.</p>")
    return html.page(title, sections, subtitle)
