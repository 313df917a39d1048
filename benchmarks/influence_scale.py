"""Converged IF and EIF at the paper's scales on trained heads, in head passes.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/influence_scale.py                 # both parts
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/influence_scale.py --part cub
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/influence_scale.py --part inshop --inshop-if 10

Inputs are heads and proxies trained to a loss plateau on clustered features
(:func:`synthetic.trained_problem`, cached in ``benchmarks/.cache/``), with confusions mined as the
pipeline mines them. A *head pass* is the (N, D) x (D, E) matmul that maps every training feature
through the head, timed in the same process (median of 5).

- **CUB shape** (N 5,864, D 2,048, E 512, C 100, 100 pairs): EIF on all pairs (median of 3), and IF
  converged (the ``if_converged`` method's settings: CG to relative residual 1e-3, preconditioned by
  the shared Kronecker coarse space) at lambda = 5 and 0.5, all one-time work included, per pair.
- **InShop shape** (N 25,882, D 2,048, E 512, C 3,997; 100 pairs + 30 groups of 5 pairs): EIF on all
  130 confusions (once) against its floor, N * C exponentials per confusion (``torch.exp`` of an (N, C)
  float32 tensor, median of 5, times 130); converged IF at lambda = 5 on the first ``--inshop-if``
  confusions, amortised over all 130: (shared preconditioner + CG on the subset scaled to 130) / 130,
  where the shared part is timed on its own (the coarse space of ``if_converged.yaml``, or
  ``--inshop-coarse-e`` embedding directions), the products with H per confusion, and one product's
  cost per direction (16 directions) against its arithmetic floor 2 (1 + C / D); peak RSS of the
  process. The InShop head trains for at most
  ``--inshop-epochs`` epochs (its plateau is slow; the figures are solver costs, not accuracies).

The last lines are machine-readable (``name=value``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from influence import clock  # noqa: E402
from synthetic import trained_problem  # noqa: E402

from eif.influence import (  # noqa: E402
    AttributionProblem,
    IfConfig,
    build_batch,
    classic_influence,
    empirical_influence,
)
from eif.influence.hessian import HeadHessian  # noqa: E402
from eif.influence.solvers import ConjugateGradients  # noqa: E402
from eif.influence.task import head  # noqa: E402

RESULTS: dict[str, float] = {}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def exp_seconds(n: int, c: int) -> float:
    """Median seconds of ``torch.exp`` on an (n, c) float32 tensor: EIF's floor per confusion."""
    logits = torch.randn(n, c)
    return clock(lambda: torch.exp(logits), repeat=5)


def as_problem(tp: Any) -> AttributionProblem:
    """The benchmark's trained head as the problem the methods take."""
    return AttributionProblem(tp.task, tp.ftr, tp.ytr, tp.w, tp.b, tp.fte)


def shared_seconds(tp: Any, cfg: IfConfig) -> float:
    """Seconds of the preconditioner that ``cfg`` shares across confusions (built once)."""
    hess = HeadHessian(tp.task, tp.ftr, head(tp.ftr, tp.w, tp.b), tp.ytr)
    solver = cfg.solver
    assert isinstance(solver, ConjugateGradients)
    pre = solver.preconditioner()
    t0 = time.perf_counter()
    if pre is not None:
        pre.build(hess, solver.damping, {})
    return time.perf_counter() - t0


def converged(damping: float, k_chunk: int = 100, **changes: Any) -> IfConfig:
    """The ``if_converged`` method's solver settings, read from conf/methods/if_converged.yaml, at
    ``damping``."""
    yaml = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/methods/if_converged.yaml")
    solver = dict(OmegaConf.to_container(yaml.if_converged.solver))  # type: ignore[arg-type]
    return IfConfig(solver=ConjugateGradients(**{**solver, "damping": damping, **changes}), k_chunk=k_chunk)


def cub() -> None:
    t0 = time.perf_counter()
    tp = trained_problem(5864, 2048, 512, 100, 100, noise=1.0, latent=16)
    print(f"CUB shape: trained head (loss {tp.loss:.3f}) ready in {time.perf_counter() - t0:.0f} s")
    batch = build_batch([p[None] for p in tp.pairs])
    k = len(tp.pairs)
    hp = clock(lambda: tp.ftr @ tp.w.T, repeat=5)
    with torch.no_grad():
        t_eif = clock(lambda: empirical_influence(as_problem(tp), batch), 3)
    print(f"  head pass {hp:.4f} s; EIF {k} pairs {t_eif:.2f} s = {t_eif / hp:.2f} head passes")
    RESULTS["eif_head_passes_total"] = t_eif / hp
    for lam in (5.0, 0.5):
        t1 = time.perf_counter()
        res = classic_influence(as_problem(tp), batch, converged(lam))
        sec = time.perf_counter() - t1
        its = res.iterations.float()
        print(
            f"  IF converged lambda={lam:g}: {sec:.1f} s = {sec / hp / k:.2f} head passes per pair "
            f"(shared preconditioner included); CG iterations median {its.median():.0f} max {its.max():.0f}; "
            f"relative residual max {float(res.residual.max()):.2e}"
        )
        if "coarse" in res.info:
            print(f"    coarse space {res.info['coarse']}")
        tag = "" if lam == 5.0 else "_lambda0.5"
        RESULTS[f"if_converged{tag}_head_passes_per_pair"] = sec / hp / k
        RESULTS[f"if_converged{tag}_residual"] = float(res.residual.max())


def inshop(n_if: int, epochs: int, coarse_e: int | None) -> None:
    t0 = time.perf_counter()
    tp = trained_problem(25882, 2048, 512, 3997, 250, noise=1.0, latent=16, max_epochs=epochs)
    print(f"InShop shape: trained head (loss {tp.loss:.3f}) ready in {time.perf_counter() - t0:.0f} s")
    pairs = tp.pairs
    if len(pairs) < 250:
        raise SystemExit(f"only {len(pairs)} confusions mined; need 250 (100 pairs + 30 groups of 5)")
    confusions = [p[None] for p in pairs[:100]] + [pairs[100 + 5 * g : 105 + 5 * g] for g in range(30)]
    batch = build_batch(confusions)
    k = len(confusions)
    n, c = tp.ftr.shape[0], tp.task.cos_loss.cosine_targets().shape[0]
    hp = clock(lambda: tp.ftr @ tp.w.T, repeat=5)
    t_exp = exp_seconds(n, c)
    with torch.no_grad():
        t_eif = clock(lambda: empirical_influence(as_problem(tp), batch))
    floor = t_exp * k
    print(
        f"  head pass {hp:.3f} s; exp of (N, C) {t_exp:.3f} s; EIF {k} confusions {t_eif:.1f} s "
        f"= {t_eif / floor:.2f} x the floor ({floor:.1f} s) = {t_eif / hp:.1f} head passes"
    )
    RESULTS["inshop_eif_floor_ratio"] = t_eif / floor
    cfg = converged(5.0, k_chunk=16, **({} if coarse_e is None else {"coarse_e": coarse_e}))
    t_shared = shared_seconds(tp, cfg)
    sub = batch.select(slice(0, n_if))
    t1 = time.perf_counter()
    res = classic_influence(as_problem(tp), sub, cfg)
    t_sub = time.perf_counter() - t1
    per = max(t_sub - t_shared, 0.0) / n_if
    amortised = (t_shared + per * k) / k
    its = res.iterations.float()
    print(
        f"  IF converged lambda=5 on {n_if} confusions: {t_sub:.0f} s (shared preconditioner alone "
        f"{t_shared:.0f} s = {t_shared / hp:.0f} head passes); "
        f"CG iterations median {its.median():.0f} max {its.max():.0f}; "
        f"relative residual max {float(res.residual.max()):.2e}; amortised over {k}: "
        f"{amortised / hp:.1f} head passes per confusion"
    )
    RESULTS["inshop_if_head_passes_per_confusion"] = amortised / hp
    RESULTS["inshop_if_residual"] = float(res.residual.max())
    RESULTS["inshop_if_products_per_confusion"] = res.info["hessian_products"] / n_if
    # one product with H on 16 directions: its cost per direction, against its arithmetic floor of
    # 2 (1 + M / D) head passes (two head GEMMs and two GEMMs with the M cosine targets)
    hess = HeadHessian(tp.task, tp.ftr, head(tp.ftr, tp.w, tp.b), tp.ytr)
    x = torch.randn(16, *tp.w.shape, generator=torch.Generator().manual_seed(0))
    t_prod = clock(lambda: hess.matvec(x)) / 16
    print(
        f"  one product with H ({hess.form} curvature): {t_prod / hp:.2f} head passes per direction "
        f"(arithmetic floor {2 * (1 + c / tp.ftr.shape[1]):.2f})"
    )
    RESULTS["inshop_product_head_passes"] = t_prod / hp
    RESULTS["inshop_peak_rss_gb"] = peak_gb()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["cub", "inshop", "all"], default="all")
    ap.add_argument("--inshop-if", type=int, default=10, help="confusions for the InShop IF timing")
    ap.add_argument(
        "--inshop-coarse-e",
        type=int,
        default=None,
        help="embedding-side rank of the InShop coarse space (default: if_converged.yaml's coarse_e)",
    )
    ap.add_argument("--inshop-epochs", type=int, default=30, help="most epochs to train the InShop head")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch threads={torch.get_num_threads()}")
    if args.part in ("cub", "all"):
        cub()
    if args.part in ("inshop", "all"):
        inshop(args.inshop_if, args.inshop_epochs, args.inshop_coarse_e)
    print(f"peak RSS {peak_gb():.2f} GB")
    for name, value in RESULTS.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
