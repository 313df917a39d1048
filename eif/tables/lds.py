"""The attribution benchmark across a sweep's seeds (``sweeps/lds.yaml``): every job's ``lds.json``
(stage ``lds``) collected into ``lds_seeds.csv`` (one row per job, kind, method and horizon) and
summarised per kind, method and horizon, with the trained model (seed) as the unit of replication
(statistics in :mod:`eif.tables.seedstats`):

Every row names its re-training protocol (``warm_start``, ``scratch``; rows of older jobs are
warm-start), and the tables show the protocols side by side.

- ``lds_summary.csv``: the mean LDS over seeds with its standard deviation, range and a bootstrap
  interval over seeds; the noise ceiling likewise;
- ``lds_compare.csv``: the reference method (the first the jobs list, EIF in ``sweeps/lds.yaml``)
  against every other method: the mean over seeds of LDS_reference − LDS_method, its bootstrap interval
  over seeds, and two-sided one-sample t-test and Wilcoxon signed-rank p-values on the seeds'
  differences (one LDS per model, so no mixed model);
- ``lds_removal.csv``: per k and method, the mean gain in Δd over removing k random samples, with
  the same seed-level statistics and Stouffer's combination of the jobs' p-values, labelled
  conditional on these models.

``lds.md`` shows all three.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from eif.retrain.labels import WARM_START, column_title, protocol_title
from eif.tables.seedstats import across_seeds, stouffer
from eif.tables.sweep import SweepTablesCallback, config_identity
from eif.utils.io import read_json, write_text

log = logging.getLogger(__name__)
IDENT = ("dataset", "loss", "seed")
MODEL = ("dataset", "loss")  # what the seeds replicate
Row = dict[str, Any]
K = TypeVar("K", bound=Hashable)


def collect(sweep_dir: Path) -> tuple[list[Row], list[Row], list[Row]]:
    """(LDS rows, ceiling rows, removal rows) of every finished job, each with the job's identity and
    ``methods`` (the job's method order, space-separated)."""
    lds_rows: list[Row] = []
    ceil_rows: list[Row] = []
    removal_rows: list[Row] = []
    for path in sorted(Path(sweep_dir).glob("*/artifacts/lds/lds.json")):
        job = path.parents[2]
        try:
            ident, info = {**config_identity(job, IDENT), "job": job.name}, read_json(path)
            rows, ceilings, removal = info["rows"], info["ceilings"], info["removal"]
        except (OSError, ValueError, KeyError) as err:
            log.warning("lds: skipping unreadable job %s (%s)", job, err)
            continue
        order = info.get("methods") or list(dict.fromkeys(r["method"] for r in rows))
        ident["methods"] = " ".join(order)
        # rows of lds.json before version 3 are warm-start rows
        lds_rows += [
            {**ident, "protocol": WARM_START, **{k: v for k, v in r.items() if k != "per_seed"}} for r in rows
        ]
        ceil_rows += [{**ident, "protocol": WARM_START, **r} for r in ceilings]
        removal_rows += [{**ident, **r} for r in removal]
    return lds_rows, ceil_rows, removal_rows


def _groups(rows: Iterable[Row], key: Callable[[Row], K]) -> dict[K, list[Row]]:
    """Rows by ``key``, in order of first appearance."""
    out: dict[K, list[Row]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def _by(*names: str) -> Callable[[Row], tuple[Any, ...]]:
    return lambda r: tuple(r[n] for n in names)


def summarise(rows: Sequence[Row], value: str, by: Sequence[str]) -> list[Row]:
    """Per ``by``: mean, standard deviation (ddof 1), min, max and count of ``value`` over jobs, and a
    95% bootstrap interval of the mean over jobs (``ci_low``, ``ci_high``)."""
    out = []
    for i, (key, g) in enumerate(_groups(rows, _by(*by)).items()):
        x = np.array([float(r[value]) for r in g])
        seeds = across_seeds([[v] for v in x], "two-sided", seed=i)
        out.append(
            {
                **dict(zip(by, key, strict=True)),
                "mean": float(x.mean()),
                "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
                "low": float(x.min()),
                "high": float(x.max()),
                "jobs": len(x),
                "ci_low": seeds["low"],
                "ci_high": seeds["high"],
            }
        )
    return out


def compare_methods(lds: Sequence[Row]) -> list[Row]:
    """Per (dataset, loss, kind, protocol, horizon): the reference method (first in the jobs' method
    order) against every other method, on the per-seed differences of LDS (two-sided)."""
    out = []
    for key, g in _groups(lds, _by(*MODEL, "kind", "protocol", "horizon")).items():
        reference = str(g[0]["methods"]).split()[0]
        ref = {r["seed"]: float(r["lds"]) for r in g if r["method"] == reference}
        for method, m in _groups((r for r in g if r["method"] != reference), _by("method")).items():
            diffs = [[ref[r["seed"]] - float(r["lds"])] for r in m if r["seed"] in ref]
            if not diffs:
                continue
            out.append(
                {
                    **dict(zip((*MODEL, "kind", "protocol", "horizon"), key, strict=True)),
                    "a": reference,
                    "b": method[0],
                    **across_seeds(diffs, "two-sided", seed=len(out)),
                }
            )
    return out


def combine_removal(removal: Sequence[Row]) -> list[Row]:
    """Per (dataset, loss, kind, k, removed): mean Δd over seeds, and for each method the seed-level
    statistics of its gain over random removal (two-sided) with Stouffer's combination of the jobs'
    one-sided p-values, folded to two-sided (conditional on these models)."""
    out = []
    for key, g in _groups(removal, _by(*MODEL, "kind", "k", "removed")).items():
        row: Row = {
            **dict(zip((*MODEL, "kind", "k", "removed"), key, strict=True)),
            "jobs": len(g),
            "mean_delta": float(np.mean([float(r["mean_delta"]) for r in g])),
        }
        gains = [[float(r["vs_random"])] for r in g if _number(r.get("vs_random")) is not None]
        if gains:
            row.update(across_seeds(gains, "two-sided", seed=len(out)))
            one_sided = stouffer([_number(r.get("pvalue")) for r in g])
            row["stouffer_pvalue"] = (
                None if one_sided is None else min(1.0, 2 * min(one_sided, 1 - one_sided))
            )
        out.append(row)
    return out


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _f(v: Any, spec: str = ".3f") -> str:
    x = _number(v)
    return "" if x is None else format(x, spec)


def _cell(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return ""
    sd = "" if _number(r["sd"]) is None else f" ± {r['sd']:.3f}"
    return f"{r['mean']:.3f}{sd} [{r['low']:.3f}, {r['high']:.3f}]"


def _interval(r: Mapping[str, Any], spec: str) -> str:
    bounds = "" if _number(r.get("low")) is None else f" [{_f(r['low'], spec)}, {_f(r['high'], spec)}]"
    return f"{_f(r.get('mean'), spec)}{bounds}"


def _note(r: Mapping[str, Any]) -> str:
    status = str(r.get("status", ""))
    return "" if status in ("ok", "") else status


def markdown(
    summary: Sequence[Row], ceilings: Sequence[Row], compare: Sequence[Row], removal: Sequence[Row]
) -> str:
    parts = [
        "# Attribution benchmark across seeds\n",
        "The trained model (seed) is the unit of replication. LDS: mean over seeds ± standard deviation "
        "[min, max]. Comparisons: the mean over seeds of the difference in LDS [95% bootstrap interval "
        "over seeds], two-sided one-sample t-test and Wilcoxon signed-rank p on the seeds' differences. "
        "Removal: mean Δd after dropping each confusion's k most harmful samples; its gain over dropping "
        "k random ones with the same seed-level statistics, and Stouffer's p on the jobs' p-values, "
        "which is conditional on these models (it treats them as fixed).\n",
    ]
    for (dataset, loss, kind), g in _groups(summary, _by(*MODEL, "kind")).items():
        # protocols side by side in the order the jobs ran them, each with its horizons
        cols = list(dict.fromkeys((str(r["protocol"]), int(r["horizon"])) for r in g))
        parts += [
            f"\n## {dataset}, {loss}: LDS, {kind}s ({max(int(r['jobs']) for r in g)} seeds)\n",
            "| method | " + " | ".join(column_title(p, h) for p, h in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for method, m in _groups(g, _by("method")).items():
            by = {(str(r["protocol"]), int(r["horizon"])): r for r in m}
            parts.append(f"| {method[0]} | " + " | ".join(_cell(by.get(c)) for c in cols) + " |")
        ceil = {
            (str(r["protocol"]), int(r["horizon"])): r
            for r in ceilings
            if (r["dataset"], r["loss"], r["kind"]) == (dataset, loss, kind)
        }
        if ceil:
            parts.append("| *noise ceiling* | " + " | ".join(_cell(ceil.get(c)) for c in cols) + " |")
        rows = [r for r in compare if (r["dataset"], r["loss"], r["kind"]) == (dataset, loss, kind)]
        if rows:
            parts += [
                f"\n### {dataset}, {loss}, {kind}s: LDS of {rows[0]['a']} minus each method's\n",
                "| method | protocol | horizon | difference [95% bootstrap over seeds] | t-test p | "
                "Wilcoxon p | note |",
                "|---|---|---:|---|---:|---:|---|",
            ]
            parts += [
                f"| {r['b']} | {protocol_title(str(r['protocol']))} | {r['horizon']} | "
                f"{_interval(r, '.3f')} | {_f(r['t_pvalue'], '.2e')} | "
                f"{_f(r['w_pvalue'], '.2e')} | {_note(r)} |"
                for r in rows
            ]
    if removal:
        parts += [
            "\n## Removal\n",
            "| data set | loss | kind | k | removed by | mean Δd | gain over random [95% bootstrap over "
            "seeds] | t-test p | Wilcoxon p | Stouffer p (conditional on these models) | note |",
            "|---|---|---|---:|---|---:|---|---:|---:|---:|---|",
        ]
        for r in removal:
            head = f"| {r['dataset']} | {r['loss']} | {r['kind']} | {r['k']} | {r['removed']}"
            if "n_seeds" not in r:  # the random control itself
                parts.append(f"{head} | {_f(r['mean_delta'], '.2e')} | | | | | |")
                continue
            cells = [
                _interval(r, ".2e"),
                *(_f(r.get(k), ".2e") for k in ("t_pvalue", "w_pvalue", "stouffer_pvalue")),
            ]
            parts.append(f"{head} | {_f(r['mean_delta'], '.2e')} | " + " | ".join(cells) + f" | {_note(r)} |")
    return "\n".join(parts) + "\n"


def aggregate(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Write lds_seeds.csv, lds_summary.csv, lds_compare.csv, lds_removal.csv and lds.md into
    ``sweep_dir``; returns the per-job LDS rows."""
    sweep_dir = Path(sweep_dir)
    lds, ceilings, removal = collect(sweep_dir)
    if not lds:
        return pd.DataFrame()
    keys = [*MODEL, "kind"]
    summary = summarise(lds, "lds", [*keys, "method", "protocol", "horizon"])
    ceil = summarise(ceilings, "ceiling", [*keys, "protocol", "horizon"]) if ceilings else []
    compare = compare_methods(lds)
    rem = combine_removal(removal)
    for name, rows in (("seeds", lds), ("summary", summary), ("compare", compare), ("removal", rem)):
        write_text(sweep_dir / f"lds_{name}.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text(sweep_dir / "lds.md", markdown(summary, ceil, compare, rem))
    log.info("lds: %d jobs -> %s", len({r["job"] for r in lds}), sweep_dir / "lds.md")
    return pd.DataFrame(lds)


class LdsCallback(SweepTablesCallback):
    """Hydra callback (``sweeps/lds.yaml``): the benchmark's tables after every job and at the end."""

    build = staticmethod(aggregate)
    name = "lds"
