"""Matplotlib figures of the reports, rendered to PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_png(fig: plt.Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def detection_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], areas: dict[str, float], title: str
) -> bytes:
    """Paper Fig. 2: fraction of true flips found (y) against fraction of training data inspected (x)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, (x, y) in curves.items():
        style = {"color": "0.5", "ls": "--"} if name == "random" else {}
        ax.plot(x, y, label=f"{name} (area {areas[name]:.3f})", lw=1.6, **style)
    ax.plot([0, 1], [0, 1], color="0.85", lw=0.8, zorder=0)
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


def bar_counts(counts: dict[str, int], title: str) -> bytes:
    """A bar chart of category counts (Table 5)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(list(counts), list(counts.values()), color="#4c72b0")
    for i, v in enumerate(counts.values()):
        ax.text(i, v, str(v), ha="center", va="bottom", fontsize=9)
    ax.set(title=title, ylabel="classes")
    return to_png(fig)
