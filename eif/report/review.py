"""The review page (``review.html``): Algorithm 1's label suggestions as one self-contained file that
a person opens in a browser (no server) to accept, reject or change each suggestion and export the
corrected labels as CSV.

The page holds every suggestion as JSON with a small thumbnail (a data URI of at most ``px`` pixels)
and renders one page of cards at a time; decisions are kept in the browser's ``localStorage`` (per
run) until exported. The exported file (``corrected_labels.csv``) has one row per reviewed
suggestion: ``id`` (training index), ``path`` (relative to the data set root, or ``index:<i>``),
``old_label`` / ``new_label`` (class names), ``old_label_id`` / ``new_label_id`` (training label ids
0..C-1), ``decision`` (``accept``: new = the suggestion; ``reject``: new = old; ``change``: new =
the person's choice), and the run that made the page, the same on every row: ``store_keys`` (JSON
object {stage: store key}) and ``overrides`` (JSON list of the run's Hydra overrides). Text cells
that a spreadsheet would run as a formula start with ``'`` (:mod:`eif.utils.csvsafe`).

The page filters by class, flagging method, method agreement (how many methods flag a sample), vote
share ``p`` and review status, sorts by review order, vote share or agreement, and its bulk buttons
decide the open cards of the page as filtered. Where the data has no images (feature vectors) a
card shows the sample's path or ``index:<i>`` in place of the thumbnail.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from eif import pages
from eif.influence.artifacts import Influence
from eif.mislabel import detect, knn
from eif.report import html
from eif.report.samples import Samples, load_samples
from eif.utils.io import read_json

Rows = Literal["changes", "all"]
CSV_COLUMNS = (
    "id",
    "path",
    "old_label",
    "new_label",
    "old_label_id",
    "new_label_id",
    "decision",
    "store_keys",
    "overrides",
)


@dataclass(frozen=True)
class ReviewSettings:
    """What the page lists: ``rows`` = ``changes`` (suggestions that change a label) or ``all``
    (every queried sample), at most ``limit`` of them (None: all), thumbnails of ``px`` pixels and
    ``examples`` thumbnails of each class involved."""

    rows: Rows
    limit: int | None
    px: int
    examples: int


def votes(
    embeddings: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    queries: np.ndarray,
    k: int,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Algorithm 1 on training points ``queries`` (Q,): the suggestion (argmax, as
    :func:`knn.recommend`) and the 3 best classes and their vote shares, (Q,), (Q, 3), (Q, 3). The
    votes are formed ``chunk`` queries at a time, so memory stays ``chunk x num_classes``, not ``Q x
    num_classes`` (InShop: 4k classes)."""
    nbrs = knn.train_neighbours(embeddings, k, queries)
    hard = np.empty(queries.size, np.int64)
    top = np.zeros((queries.size, 3), np.int64)
    share = np.zeros((queries.size, 3))
    for a in range(0, queries.size, chunk):
        v = knn.weighted_votes(
            knn.Neighbours(nbrs.indices[a : a + chunk], nbrs.distances[a : a + chunk]), labels, num_classes
        )
        hard[a : a + chunk] = v.argmax(axis=1)
        best = np.argpartition(-v, min(2, num_classes - 1), axis=1)[:, :3]
        rows = np.arange(v.shape[0])[:, None]
        best = np.take_along_axis(best, np.argsort(-v[rows, best], axis=1, kind="stable"), axis=1)
        top[a : a + chunk, : best.shape[1]] = best
        share[a : a + chunk, : best.shape[1]] = v[rows, best]
    return hard, top, share


def suggestions(
    samples: Samples,
    scores: dict[str, np.ndarray],
    primary: str,
    queries: str,
    k: int,
    rows: Rows,
    limit: int | None,
) -> tuple[pd.DataFrame, int, int]:
    """The suggestions to review, in review order, how many there are before ``limit`` and how many
    of those ``primary`` flags (the relabel stage's queries: with ``rows="changes"`` its ``changes_label``).

    ``scores``: each method's influence on the detect group (N,), positive = harmful. A sample is
    queried when some method flags it (positive score; ``queries="all"``: every sample) and gets
    Algorithm 1's weighted-kNN suggestion over ``k`` neighbours. Columns: ``id``, ``label``,
    ``suggested``, ``p`` (vote share of the suggestion), ``votes`` (the up to 3 best ``(class,
    share)``), ``flags`` ({method: (score, rank)}: rank 1 = most harmful), ``priority`` (the best rank
    over the flagging methods; ties by ``primary``'s rank). ``rows="changes"`` keeps the suggestions
    that differ from the current label; the first ``limit`` rows are kept.
    """
    tr = samples.train
    n = tr.labels.size
    flagged = {m: (s > 0) if queries == "harmful" else np.ones(n, bool) for m, s in scores.items()}
    ranks = {}
    for m, s in scores.items():
        ranks[m] = np.empty(n, np.int64)
        ranks[m][detect.descending(s)] = np.arange(1, n + 1)
    ids = np.flatnonzero(np.any(np.stack(list(flagged.values())), axis=0))
    hard, top, share = votes(tr.embeddings, tr.labels, len(samples.train_class_names), ids, k)
    keep = hard != tr.labels[ids] if rows == "changes" else np.ones(ids.size, bool)
    ids, hard, top, share = ids[keep], hard[keep], top[keep], share[keep]
    best = np.min(np.stack([np.where(flagged[m][ids], ranks[m][ids], n + 1) for m in scores]), axis=0)
    out = []
    by_primary = int(flagged[primary][ids].sum())
    for q in np.lexsort((ranks[primary][ids], best))[:limit]:
        i = int(ids[q])
        out.append(
            {
                "id": i,
                "label": int(tr.labels[i]),
                "suggested": int(hard[q]),
                "p": float(share[q, 0]),
                "votes": [(int(c), float(v)) for c, v in zip(top[q], share[q]) if v > 0],
                "flags": {m: (float(scores[m][i]), int(ranks[m][i])) for m in scores if flagged[m][i]},
                "priority": int(best[q]),
            }
        )
    table = pd.DataFrame(out, columns=["id", "label", "suggested", "p", "votes", "flags", "priority"])
    return table, int(ids.size), by_primary


def class_examples(samples: Samples, classes: Sequence[int], n: int) -> dict[int, list[int]]:
    """For each class, the ``n`` training samples labelled with it nearest to its mean embedding."""
    tr = samples.train
    out = {}
    for c in classes:
        idx = np.flatnonzero(tr.labels == c)
        centre = tr.embeddings[idx].mean(axis=0)
        near = np.argsort(np.linalg.norm(tr.embeddings[idx] - centre, axis=1), kind="stable")[:n]
        out[int(c)] = idx[near].tolist()
    return out


def page_data(
    title: str,
    run_name: str,
    samples: Samples,
    table: pd.DataFrame,
    methods: Sequence[str],
    k: int,
    load: Callable[[int], Image.Image] | None,
    cfg: ReviewSettings,
    store_keys: dict[str, str],
    overrides: Sequence[str],
) -> dict[str, Any]:
    """The JSON the page's script reads: classes, methods, rows with thumbnails (None without
    ``load``: data without images), class examples, and the run's ``store_keys`` and ``overrides``
    that the export records."""

    def thumb(i: int) -> str | None:
        return None if load is None else html.thumbnail_uri(load(i), cfg.px)

    rows = [
        {
            "id": int(r["id"]),
            "path": samples.train_ref(r["id"]),
            "label": int(r["label"]),
            "suggested": int(r["suggested"]),
            "p": round(float(r["p"]), 4),
            "votes": [[c, round(v, 4)] for c, v in r["votes"]],
            "flags": {m: [round(s, 6), rank] for m, (s, rank) in r["flags"].items()},
            "img": thumb(int(r["id"])),
        }
        for r in table.to_dict("records")
    ]
    involved = sorted(set(table.label.tolist()) | set(table.suggested.tolist()))
    examples = {
        c: [{"id": i, "img": thumb(i)} for i in ids]
        for c, ids in class_examples(samples, involved, cfg.examples).items()
    }
    digest = hashlib.sha256(json.dumps([r["id"] for r in rows] + [r["suggested"] for r in rows]).encode())
    return {
        "title": title,
        "key": f"{run_name}:{digest.hexdigest()[:12]}",
        "classes": list(samples.train_class_names),
        "methods": list(methods),
        "k": k,
        "px": cfg.px,
        "rows": rows,
        "examples": examples,
        "columns": list(CSV_COLUMNS),
        "store_keys": dict(store_keys),
        "overrides": list(overrides),
    }


def count_note(
    rows: Rows, shown: int, total: int, by_primary: int, primary: str, methods: Sequence[str], info: dict
) -> str:
    """One sentence on how the page's count relates to the relabel stage's (the log's and report's
    "<n> would change label"): the page also lists the samples only the other methods flag."""
    others = ", ".join(m.upper() for m in methods if m != primary) or "no other method"
    what = "suggestions that change a label" if rows == "changes" else "queried samples"
    relabel = (
        f"the relabel stage's {info['changes_label']} that would change label"
        if rows == "changes"
        else f"the relabel stage's {info['n_queries']} queries"
    )
    text = (
        f"{total} {what}: {by_primary} flagged by {primary.upper()} ({relabel}) and "
        f"{total - by_primary} flagged only by {others}."
    )
    if shown < total:
        text += f" This page holds the first {shown} in review order (report.review_max)."
    return text


def render(data: dict[str, Any], note: str) -> str:
    """The self-contained page: the data as JSON (in a script element no string of it can end), the
    page's markup, CSS and script inline (templates ``review.html``, ``review.css``, ``review.js``)."""
    return pages.render("review.html", data=data, note=note)


def build(
    title: str,
    run_name: str,
    outputs: dict[str, Path],
    group: int,
    load: Callable[[int], Image.Image] | None,
    cfg: ReviewSettings,
    store_keys: dict[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> str:
    """The review page of a run with ``embed``, ``influence`` and ``relabel`` outputs: the relabel
    stage's ``k`` and query rule, every method's flags on confusion group ``group`` (the relabel
    stage's method first); ``load`` gives training image i (None: data without images).
    ``store_keys`` ({stage: key}; default: each output dir's name, as the store names an artifact
    dir by its key) and ``overrides`` identify the run in the export."""
    samples = load_samples(outputs["embed"])
    info = read_json(outputs["relabel"] / "relabel.json")
    scores = Influence(outputs["influence"]).group_scores(group)
    primary = str(info["method"])
    scores = {primary: scores[primary], **scores}
    table, total, by_primary = suggestions(
        samples, scores, primary, info["queries"], int(info["k"]), cfg.rows, cfg.limit
    )
    keys = {stage: Path(d).name for stage, d in outputs.items()} if store_keys is None else store_keys
    data = page_data(
        title, run_name, samples, table, list(scores), int(info["k"]), load, cfg, keys, overrides
    )
    return render(data, count_note(cfg.rows, len(table), total, by_primary, primary, list(scores), info))
