"""Stage ``influence``: every selected attribution method scores every training sample for the mined
confusions (pairs, groups, mis-similar pairs).

Reads the head (W, b) and the trained proxies from ``train``, the cached trunk features from ``embed``
and the confusions from ``mine``; never images. The methods are the job's ``methods`` group
(``methods=[eif,if]`` by default; docs/influence.md lists them); the artifact layout is
:mod:`eif.influence.artifacts`. ``publish`` prints one warning line per run naming every IF
variant whose linear solve is off its own system (median relative residual above its ``warn_residual``),
the trained head's IF diagnostics (:mod:`eif.influence.diagnostics`: the stationarity ratio and, per
IF variant, the number of Hessian eigenvalues above its damping, computed once per method by
:meth:`~eif.methods.base.MethodConfig.diagnose`), and one note when W0 is far from
stationary (ratio above ``STATIONARITY_WARN``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from eif.influence import build_batch
from eif.influence.artifacts import Influence, write_analysis, write_index
from eif.influence.diagnostics import STATIONARITY_WARN, stationarity
from eif.influence.task import ConfusionTask
from eif.losses import build_loss
from eif.methods.base import AttributionProblem, MethodConfig
from eif.settings import Settings, dump
from eif.stages.base import Run, Stage
from eif.utils import console
from eif.utils.errors import NothingToExplain, require
from eif.utils.io import load_torch

log = logging.getLogger(__name__)

Kind = Literal["pair", "group", "missim"]


class InfluenceConfig(Settings):
    """``influence``: which kinds of confusion are explained (missim: same class, far apart)."""

    kinds: tuple[Kind, ...] = ("pair", "group")


class InfluenceSettings(Settings):
    influence: InfluenceConfig
    methods: dict[str, MethodConfig]


def _settings(job: Any, env: Any) -> InfluenceSettings:
    return InfluenceSettings(influence=job.influence, methods=job.methods)


def _check(job: Any) -> None:
    require(bool(job.methods), "methods is empty: select at least one attribution method, e.g. methods=[eif]")


def confusions(mine: dict[str, np.ndarray], kind: str) -> tuple[list[np.ndarray], float]:
    """The pair arrays (n_k, 2) of every confusion of ``kind`` in the mine stage's order, and the sign
    of its objective (+1: repair pushes apart; -1 for mis-similar pairs: repair pulls together)."""
    if kind == "pair":
        return [p[None] for p in mine["pairs"]], 1.0
    if kind == "missim":
        return [p[None] for p in mine["missim"]], -1.0
    off = mine["group_pair_offsets"]
    return [mine["group_pairs"][a:b] for a, b in zip(off[:-1], off[1:])], 1.0


def load_problem(run: Run) -> AttributionProblem:
    """The :class:`~eif.methods.base.AttributionProblem` of the trained head on the cached features."""
    ck = load_torch(run.input("train") / "model.pt")
    w, b = ck["model"]["head.weight"].float(), ck["model"]["head.bias"].float()
    loss = build_loss(ck["loss_cfg"], int(ck["num_classes"]), int(w.shape[0]))
    loss.load_state_dict(ck["loss"])
    embed = run.input("embed")
    train, test = np.load(embed / "train.npz"), np.load(embed / "test.npz")
    dev = run.device
    problem = AttributionProblem(
        task=ConfusionTask.from_loss(loss.float().to(dev).eval()),
        train_features=torch.from_numpy(train["features"]).float().to(dev),
        train_labels=torch.from_numpy(train["labels"]).long().to(dev),
        weight=w.to(dev),
        bias=b.to(dev),
        test_features=torch.from_numpy(test["features"]).float().to(dev),
    )
    check = problem.test_features[:256] @ problem.weight.T + problem.bias
    ref = torch.from_numpy(test["embeddings"][:256]).float().to(dev)
    err = float((check - ref).norm() / ref.norm().clamp_min(1e-12))
    require(
        err < 1e-3,
        f"embed/test.npz embeddings are not features @ W^T + b of the trained head (relative error "
        f"{err:.2g}): the embed and train artifacts do not belong together",
    )
    return problem


def _compute(s: InfluenceSettings, run: Run, out: Path) -> None:
    mine = dict(np.load(run.input("mine") / "mine.npz"))
    if not any(confusions(mine, kind)[0] for kind in s.influence.kinds):
        raise NothingToExplain(f"the model has no {' or '.join(s.influence.kinds)} confusions to attribute")
    problem = load_problem(run)
    entries = []
    for kind in s.influence.kinds:
        pairs, sign = confusions(mine, kind)
        if not pairs:
            log.warning("influence: no %s confusions to analyse", kind)
            continue
        batch = build_batch(pairs, sign)
        batch = type(batch)(*(x.to(run.device) for x in vars(batch).values()))
        for name, method in s.methods.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                r = method.score(problem, batch, progress=run.progress)
            seconds = time.perf_counter() - t0
            arrays = {k: v.cpu().numpy() for k, v in r.arrays.items()}
            entries.append(
                write_analysis(
                    out,
                    kind,
                    name,
                    r.scores.float().cpu().numpy(),
                    r.d0.cpu().numpy(),
                    pairs,
                    arrays,
                    r.info,
                    seconds,
                )
            )
    methods = {n: dump(m) for n, m in s.methods.items()}
    with torch.no_grad():  # facts about each method on this head, whatever the confusions: once each
        per_method = {n: m.diagnose(problem) for n, m in s.methods.items()}
    diagnostics = stationarity(problem).record() | {"methods": per_method}
    write_index(out, entries, problem.n_train, methods, diagnostics)


def residual_warning(influence: Influence) -> str | None:
    """One line naming every analysis whose solver is off its own linear system (median relative
    residual above its tolerance), with the figures; None when all are on."""
    parts = []
    for (kind, method), entry in influence.entries.items():
        info = entry.get("info", {})
        med, tol = info.get("residual_median"), info.get("tolerance")
        if med is None or tol is None or med <= tol:
            continue
        lam = info["damping_effective"]
        part = (
            f"{method} on {entry['num_confusions']} {kind} confusions: (H + {lam:.3g} I) x = v solved to a "
            f"relative residual of median {med:.3g}, max {info['residual_max']:.3g} (tolerance {tol:g})"
        )
        curv = info.get("curvature")
        if curv:
            part += (
                f", {curv['above_2_scale']} of {curv['n']} training samples with a curvature above "
                f"2 * scale = {2 * info['scale']:.4g} (max {curv['max']:.4g})"
            )
        parts.append(part)
    if not parts:
        return None
    return "IF is off its own linear system: " + "; ".join(parts) + " (docs/science.md: what this means)"


def diagnostics_lines(influence: Influence) -> tuple[str | None, str | None]:
    """(one summary line of the IF diagnostics, one note when W0 is far from stationary), each None
    when there is nothing to say (artifacts written before the diagnostics)."""
    ratio = influence.diagnostics.get("stationarity_ratio")
    parts = [] if ratio is None else [f"stationarity |mean_i grad L_i| / mean_i |grad L_i| = {ratio:.3g}"]
    for method, facts in influence.diagnostics.get("methods", {}).items():
        eig = facts.get("eigenvalues_above_damping")
        if eig:
            bound = "at least " if eig["saturated"] else ""
            parts.append(
                f"{method}: {bound}{eig['count']} Hessian eigenvalues above the damping {eig['damping']:.3g} "
                f"({eig['lanczos_steps']} Lanczos steps; largest {eig['highest']:.3g})"
            )
    summary = "IF diagnostics: " + "; ".join(parts) if parts else None
    note = None
    if ratio is not None and ratio > STATIONARITY_WARN:
        note = (
            f"W0 is far from a stationary point of the training loss (stationarity ratio {ratio:.3g} > "
            f"{STATIONARITY_WARN:g}): IF's first-order picture assumes one "
            "(docs/influence.md, IF diagnostics)"
        )
    return summary, note


def _publish(s: InfluenceSettings, run: Run, out: Path) -> None:
    influence = Influence(out)
    rows = []
    for (kind, method), entry in influence.entries.items():
        a = influence.get(kind, method)
        info = entry.get("info", {})
        run.logger.summary({f"influence/{kind}_{method}_seconds": entry["wall_seconds"]})
        for key in ("residual_median", "residual_max"):
            if key in info:
                run.logger.summary({f"influence/{kind}_{method}_{key}": info[key]})
        n_harm, n_help = np.diff(a.arrays["harmful_offsets"]), np.diff(a.arrays["helpful_offsets"])
        for k in range(entry["num_confusions"]):
            row = {
                "kind": kind,
                "method": method,
                "confusion": k,
                "d0": float(a.d0[k]),
                "n_harmful": int(n_harm[k]),
                "n_helpful": int(n_help[k]),
            }
            if "residual" in a.arrays:
                row["residual"] = float(a.arrays["residual"][k])
            rows.append(row)
        log.info(
            "influence %s/%s: %d confusions in %.1f s",
            kind,
            method,
            entry["num_confusions"],
            entry["wall_seconds"],
        )
    warning = residual_warning(influence)
    if warning:
        console.warn(log, warning)
    summary, note = diagnostics_lines(influence)
    if summary:
        log.info(summary)
    if note:
        console.warn(log, note)
    diag = influence.diagnostics
    if "stationarity_ratio" in diag:
        run.logger.summary({"influence/stationarity_ratio": diag["stationarity_ratio"]})
    for method, facts in diag.get("methods", {}).items():
        if "eigenvalues_above_damping" in facts:
            count = facts["eigenvalues_above_damping"]["count"]
            run.logger.summary({f"influence/{method}_eigenvalues_above_damping": count})
    run.logger.table("influence/confusions", pd.DataFrame(rows))


STAGE = Stage(
    name="influence",
    settings=_settings,
    compute=_compute,
    publish=_publish,
    deps=("train", "embed", "mine"),
    config=("influence", InfluenceConfig),
    check=_check,
    version=4,
)
