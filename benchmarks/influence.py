"""Benchmark EIF and IF on CUB-shaped random inputs, in multiples of one head pass.

    python benchmarks/influence.py            # N=5864, D=2048, E=512, C=100, K=100 (a few minutes)
    python benchmarks/influence.py --small    # a quick smoke run

A "head pass" is the (N, D) x (D, E) matmul that maps every training feature through the head,
timed in the same process. The naive reference (per-sample autograd on a dense W', one training
sample at a time, as the reference code's loops) is timed on a few pairs / samples and
extrapolated; the printout says so. IF-exact is impossible at this size (a dense Hessian of
(E*D)^2 = 1.1e12 entries) and is skipped. Peak memory is the process's max RSS (getrusage).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np
import torch

from eif.influence import (
    AttributionProblem,
    ConfusionTask,
    EifConfig,
    IfConfig,
    build_batch,
    classic_influence,
    empirical_influence,
)
from eif.influence.solvers import ConjugateGradients, Lissa
from eif.influence.task import head
from eif.losses import ProxyNCAPP
from eif.utils.errors import EifError


def clock(fn: Callable[[], object], repeat: int = 1) -> float:
    """Median wall seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_eif_seconds(task, ftr, ytr, w, b, fte, pairs, cfg: EifConfig, n_samples: int) -> float:
    """Seconds for one pair: dense-W ascent by autograd, then per-sample losses one at a time under
    W0 and W' (the reference's loop over the training set), extrapolated from ``n_samples`` samples."""
    a, c = pairs[0]
    t0 = time.perf_counter()
    wt, d0 = w.clone(), None
    for _ in range(cfg.max_steps):
        wt.requires_grad_(True)
        d = task.measurement(head(fte[a], wt, b), head(fte[c], wt, b))
        d0 = d.detach() if d0 is None else d0
        if abs(float(d.detach() - d0)) >= cfg.stop_delta:
            break
        (g,) = torch.autograd.grad(d, wt)
        wt = (wt + cfg.lr * g).detach()
    ascent = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(n_samples):
            for wm in (w, wt.detach()):
                task.train_loss(head(ftr[i : i + 1], wm, b), ytr[i : i + 1])
    return ascent + (time.perf_counter() - t0) * len(ftr) / n_samples


def naive_if_seconds(task, ftr, ytr, w, b, n_steps: int) -> float:
    """Seconds for one pair: a LiSSA pass of N steps by double backprop on dense W, plus N per-sample
    gradients, extrapolated from ``n_steps`` steps."""
    v = torch.randn_like(w)
    h = v.clone()
    t0 = time.perf_counter()
    for i in range(n_steps):
        wr = w.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(
            task.train_loss(head(ftr[i : i + 1], wr, b), ytr[i : i + 1]).sum(), wr, create_graph=True
        )
        (hv,) = torch.autograd.grad((g * h).sum(), wr)
        h = v + 0.99 * h - hv / 500
    lissa_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n_steps):
        wr = w.clone().requires_grad_(True)
        torch.autograd.grad(task.train_loss(head(ftr[i : i + 1], wr, b), ytr[i : i + 1]).sum(), wr)
    grads_s = time.perf_counter() - t0
    return (lissa_s + grads_s) * len(ftr) / n_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="N=600, D=256, E=64, K=10: a smoke run")
    ap.add_argument("--cg-pairs", type=int, default=10, help="pairs for the CG timing (per-pair cost)")
    args = ap.parse_args()
    n, d, e, c, k = (600, 256, 64, 20, 10) if args.small else (5864, 2048, 512, 100, 100)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    loss = ProxyNCAPP(c, e)
    task = ConfusionTask.from_loss(loss)
    ftr = torch.nn.functional.layer_norm(torch.randn(n, d, generator=g).relu(), (d,))
    ytr = torch.randint(0, c, (n,), generator=g)
    w = torch.randn(e, d, generator=g) / d**0.5
    b = 0.01 * torch.randn(e, generator=g)
    fte = torch.nn.functional.layer_norm(torch.randn(2 * k, d, generator=g).relu(), (d,))
    pairs = np.arange(2 * k).reshape(k, 2)
    batch = build_batch([p[None] for p in pairs])
    prob = AttributionProblem(task, ftr, ytr, w, b, fte)
    warm = AttributionProblem(task, ftr[:300], ytr[:300], w, b, fte)
    print(f"inputs: N={n} D={d} E={e} C={c} K={k} pairs; torch threads={torch.get_num_threads()}")

    head_pass = clock(lambda: ftr @ w.T, repeat=5)
    rows = [("head pass (N x D x E matmul)", head_pass, 1.0, "")]
    eif_cfg = EifConfig()
    with torch.no_grad():
        t_eif = clock(lambda: empirical_influence(prob, batch, eif_cfg), repeat=3)
    rows.append(
        (f"EIF, all {k} pairs (median of 3)", t_eif, t_eif / head_pass, f"peak RSS {peak_mib():.0f} MiB")
    )
    if_cfg = IfConfig(solver=Lissa())
    with torch.no_grad():  # warm-up on 1 pair x 300 samples: torch.func's first call costs ~1 s once
        classic_influence(warm, build_batch([pairs[0][None]]), if_cfg)
        t_lissa = clock(lambda: classic_influence(prob, batch, if_cfg, progress=True))
    rows.append((f"IF-lissa, all {k} pairs", t_lissa, t_lissa / head_pass, f"peak RSS {peak_mib():.0f} MiB"))
    kc = min(k, args.cg_pairs)
    cg_cfg = IfConfig(solver=ConjugateGradients(damping=1.0, tol=1e-4, max_iter=100))
    sub = build_batch([p[None] for p in pairs[:kc]])
    try:
        t0 = time.perf_counter()
        res = classic_influence(prob, sub, cg_cfg)
        t_cg = time.perf_counter() - t0
        note = f"{kc} pairs, damping 1.0, tol 1e-4, {float(res.iterations.float().mean()):.0f} iterations"
        rows.append((f"IF-cg, {kc} pairs", t_cg, t_cg / head_pass, note))
    except EifError as err:
        rows.append((f"IF-cg, {kc} pairs", float("nan"), float("nan"), str(err)))
        t_cg = float("nan")
    rows.append(
        (
            "IF-exact",
            float("nan"),
            float("nan"),
            f"skipped: dense Hessian needs (E*D)^2 = {(e * d) ** 2:.1e} entries",
        )
    )
    t_naive_eif = naive_eif_seconds(task, ftr, ytr, w, b, fte, pairs, eif_cfg, n_samples=min(n, 200)) * k
    rows.append(
        (
            f"naive EIF, {k} pairs (extrapolated from 1 pair x 200 samples)",
            t_naive_eif,
            t_naive_eif / head_pass,
            "",
        )
    )
    t_naive_if = naive_if_seconds(task, ftr, ytr, w, b, n_steps=min(n, 20)) * k
    rows.append(
        (
            f"naive IF-lissa, {k} pairs (extrapolated from 20 steps of 1 pair)",
            t_naive_if,
            t_naive_if / head_pass,
            "",
        )
    )

    print(f"\n{'what':<66} {'seconds':>10} {'head passes':>12}  notes")
    for name, sec, hp, note in rows:
        print(f"{name:<66} {sec:>10.3f} {hp:>12.1f}  {note}")
    print(f"\npeak RSS {peak_mib():.0f} MiB")
    print(f"eif_head_passes_total={t_eif / head_pass:.2f}")
    print(f"if_lissa_head_passes_per_pair={t_lissa / head_pass / k:.2f}")
    print(f"if_cg_head_passes_per_pair={t_cg / head_pass / kc:.2f}")
    print(f"naive_eif_head_passes_total={t_naive_eif / head_pass:.1f}")
    print(f"naive_if_head_passes_per_pair={t_naive_if / head_pass / k:.1f}")


if __name__ == "__main__":
    main()
