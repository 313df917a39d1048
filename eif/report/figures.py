"""Matplotlib figures of the reports, rendered to PNG bytes (Agg backend, no display needed).

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies), and
lines also differ by style, so no chart relies on colour alone."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Okabe & Ito (2008): blue, vermillion, bluish green, reddish purple, orange, sky blue, yellow, black.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
GREY = "#999999"


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def ranking_styles(names: Sequence[str]) -> dict[str, dict]:
    """Line colour and style per detection ranking: one colour per family (``eif`` and ``eif_abs``,
    ``cleanlab_quality`` and ``cleanlab_issues``), dashed for the second member; random grey dotted."""
    families: dict[str, str] = {}
    styles = {}
    for name in names:
        if name == "random":
            styles[name] = {"color": GREY, "ls": ":"}
            continue
        family = "cleanlab" if name.startswith("cleanlab") else name.removesuffix("_abs")
        colour = families.setdefault(family, OKABE_ITO[len(families) % len(OKABE_ITO)])
        second = name.endswith("_abs") or name == "cleanlab_issues"
        styles[name] = {"color": colour, "ls": "--" if second else "-"}
    return styles


def detection_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], areas: dict[str, float], title: str
) -> bytes:
    """Paper Fig. 2: fraction of true flips found (y) against fraction of training data inspected (x)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    styles = ranking_styles(list(curves))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=f"{name} (area {areas[name]:.3f})", lw=1.8, **styles[name])
    ax.plot([0, 1], [0, 1], color="0.88", lw=0.8, zorder=0)
    ax.set(
        xlabel="fraction of training data inspected",
        ylabel="fraction of mislabelled samples found",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return to_png(fig)


def table1_chart(rows: Sequence[dict], compared: Sequence[str]) -> bytes:
    """Table 1 of one run: the mean improvement Δd_A − Δd_B (``compared`` = (A, B)) over the first n
    pairs (t-test) and groups (Wilcoxon), one panel each; bars with p < 0.05 are filled, others
    hatched; the p-value is written above each bar. Rows without a value are left out."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    a, b = (m.upper() for m in compared)
    for ax, kind in zip(axes[0], kinds):
        sel = [r for r in rows if r["kind"] == kind and r["improvement"] is not None]
        x = np.arange(len(sel))
        for i, r in enumerate(sel):
            good = r["pvalue"] is not None and r["pvalue"] < 0.05
            ax.bar(
                i,
                r["improvement"],
                color=OKABE_ITO[0] if good else "white",
                edgecolor=OKABE_ITO[0],
                hatch="" if good else "//",
            )
            p = "" if r["pvalue"] is None else f"p={r['pvalue']:.1e}"
            ax.text(i, r["improvement"], p, ha="center", va="bottom", fontsize=7)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(x, [str(r["n"]) for r in sel])
        test = sel[0]["test"] if sel else ""
        ax.set(xlabel=f"first n {kind}", ylabel=f"mean Δd_{a} − Δd_{b}", title=f"{kind} ({test})")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.margins(y=0.2)
    fig.suptitle(f"H1: Δd_{a} > Δd_{b} (filled: p < 0.05)", fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def bar_counts(counts: dict[str, int], title: str) -> bytes:
    """A bar chart of category counts (Table 5)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(list(counts), list(counts.values()), color=OKABE_ITO[0])
    for i, v in enumerate(counts.values()):
        ax.text(i, v, str(v), ha="center", va="bottom", fontsize=9)
    ax.set(title=title, ylabel="classes")
    return to_png(fig)
