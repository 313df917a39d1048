"""GPU smoke test: every CUDA path of eif in one command, PASS / FAIL / SKIP per check.

Run it through ``scripts/gpu_smoke.sh`` (or ``.venv/bin/python scripts/gpu_smoke.py``) on one GPU; it
takes a few minutes (budget: 10). Without a usable GPU every CUDA check prints SKIP with the reason
and the CPU checks still run, so the script completes anywhere. Exit status: 1 if any check FAILed.

Checks (``--only`` picks groups by name):

- ``env``: torch sees CUDA; faiss GPU imports and eif's kNN on the GPU agrees with faiss on the CPU,
  also beyond faiss GPU's k limit (2048: the CPU fallback); faiss CPU against brute force.
- ``cpu``: the stage chain train -> retrain on the CPU at test size (checks this script's overrides
  against the current config).
- ``cuda``: train (AMP, DataLoader workers), evaluate, embed, mine, influence and retrain with
  ``device=cuda`` on Fashion-MNIST; the effect of ``embed.amp=true embed.channels_last=true`` on the
  cached features.
- ``resume``: kill -9 during CUDA training, then the same command resumes from the checkpoint.
- ``agree``: the CUDA run's model.pt evaluated, embedded, mined and scored on the CPU: Recall@1 and
  MAP@R within 0.01, EIF and IF scores correlated > 0.99 on the confusions both runs found.
- ``memory``: peak GPU memory of EIF, IF and head re-training at InShop sizes (N=25,882 train
  features, D=2048, E=512, C=3,997 classes, 100 confusion pairs), on random features.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("env", "cpu", "cuda", "resume", "agree", "memory")
# Fashion-MNIST at its default size (5,000 train / 5,000 test images), trained briefly. LiSSA with
# scale=auto: a fixed scale can diverge on a short training's curvature.
FMNIST = [
    "dataset.max_per_class=1000",
    "train.epochs=4",
    "train.warmup_epochs=1",
    "methods.if.solver.scale=auto",
]
STAGES = ["train", "evaluate", "embed", "mine", "influence", "retrain"]
CUDA = [
    "device=cuda",
    "train.amp=true",
    "train.channels_last=true",
    "train.num_workers=2",
    "embed.num_workers=2",
]
# The test-size CPU run of tests/conftest.py: 60 images per class, 2 epochs.
CPU_TINY = [
    "dataset.max_per_class=60",
    "train.epochs=2",
    "train.warmup_epochs=1",
    "methods.if.solver.scale=auto",
]
INSHOP = {"n": 25882, "n_test": 26830, "d": 2048, "e": 512, "c": 3997, "pairs": 100, "batch": 96}


class Skip(Exception):
    """A check that cannot run here (its reason is printed)."""


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float


class Smoke:
    """Runs checks, prints each result at once, keeps them for the summary."""

    def __init__(self, work: Path, cuda_problem: str | None) -> None:
        self.work = work
        self.cuda_problem = cuda_problem  # None when torch can use a GPU
        self.results: list[Result] = []
        self.runs: dict[str, dict[str, Any]] = {}  # run.json records by run name

    def report(self, name: str, status: str, detail: str, seconds: float = 0.0) -> None:
        self.results.append(Result(name, status, detail, seconds))
        print(f"{status:4s}  {name:34s} {detail}  [{seconds:.1f} s]", flush=True)

    def check(self, name: str, fn: Callable[[], str], cuda: bool = True) -> bool:
        """Run ``fn`` (returns the detail line); SKIP when it needs CUDA and there is none."""
        t0 = time.perf_counter()
        try:
            if cuda and self.cuda_problem is not None:
                raise Skip("no usable GPU (see above)")
            detail, status = fn(), "PASS"
        except Skip as why:
            detail, status = str(why), "SKIP"
        except Exception as err:  # every failure is one line here; the traceback goes to the log
            detail, status = self.failure(name, err), "FAIL"
        self.report(name, status, detail, time.perf_counter() - t0)
        return status == "PASS"

    def failure(self, name: str, err: Exception) -> str:
        """Log the traceback to ``<work>/failures.log``; the error as one line."""
        with (self.work / "failures.log").open("a") as log:
            log.write(f"== {name}\n{traceback.format_exc()}\n")
        last = (str(err).strip().splitlines() or [""])[-1]
        return f"{type(err).__name__}: {last}"

    def launch(self, name: str, args: list[str], timeout: float = 300) -> dict[str, Any]:
        """``launch.py`` with the store under the work dir and the run in ``<work>/<name>``; the
        run's ``run.json`` record (its output is in ``<work>/<name>.log``)."""
        proc = subprocess.run(
            self._command(name, args), capture_output=True, text=True, timeout=timeout, cwd=self.work
        )
        (self.work / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"launch.py exited {proc.returncode}: {tail} (log: {self.work / name}.log)")
        self.runs[name] = json.loads((self.work / name / "run.json").read_text())
        return self.runs[name]

    def _command(self, name: str, args: list[str]) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "launch.py"),
            "logger=none",
            f"paths.store_dir={self.work / 'store'}",
            f"hydra.run.dir={self.work / name}",
            *args,
        ]


# ----------------------------------------------------------------------------------------------- env
def check_torch_cuda() -> str:
    name = torch.cuda.get_device_name()
    x = torch.randn(1024, 1024, device="cuda")
    err = float((x @ x.T).cpu().sub(x.cpu() @ x.cpu().T).abs().max())
    free, total = torch.cuda.mem_get_info()
    return (
        f"{name}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}), {total / 2**30:.0f} GiB ({free / 2**30:.0f} free), "
        f"matmul |GPU - CPU| {err:.1e}"
    )


def _knn_both(query: np.ndarray, ref: np.ndarray | None, k: int) -> tuple[tuple, tuple, int]:
    """eif's kNN pinned to GPU 0 and to the CPU; and how many GPU indexes the GPU call built."""
    from eif.evaluation import knn as knn_module

    built = []
    real = knn_module.flat_index

    def counting(*args: Any, **kwargs: Any) -> object:
        index = real(*args, **kwargs)
        built.append(type(index).__name__)
        return index

    knn_module.flat_index = counting
    try:
        knn_module.set_device("cuda:0")
        gpu = knn_module.knn(query, ref, k)
        knn_module.set_device("cpu")
        cpu = knn_module.knn(query, ref, k)
    finally:
        knn_module.flat_index = real
        knn_module.set_device(None)
    return gpu, cpu, sum(name.startswith("Gpu") for name in built)


def check_faiss_gpu() -> str:
    import faiss

    from eif.utils.provenance import faiss_distributions

    if faiss.get_num_gpus() < 1:
        raise RuntimeError(f"faiss ({', '.join(faiss_distributions())}) sees no GPU: install the gpu extra")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20000, 64)).astype(np.float32)
    query = rng.normal(size=(2000, 64)).astype(np.float32)
    (dg, ig), (dc, ic), n_gpu = _knn_both(query, ref, 10)
    assert n_gpu == 1, f"the search did not run on a GPU index ({n_gpu} built)"
    same = float((ig == ic).mean())
    assert same > 0.999, f"GPU and CPU neighbours agree on {same:.4f} of entries only"
    assert np.allclose(dg, dc, rtol=1e-4, atol=1e-3), f"distances differ by {np.abs(dg - dc).max():.2e}"
    (_, ig2), (_, ic2), n_gpu2 = _knn_both(query[:200], ref, 2100)  # k > 2048: the CPU fallback
    assert n_gpu2 == 0 and (ig2 == ic2).mean() > 0.999, "the k > 2048 search did not fall back to the CPU"
    return (
        f"{', '.join(faiss_distributions())}: 2000 x 20000 k=10 neighbours equal on {same:.4%}, "
        f"max |d_gpu - d_cpu| {np.abs(dg - dc).max():.1e}; k=2100 fell back to the CPU"
    )


def check_faiss_cpu() -> str:
    from eif.evaluation.knn import knn, set_device

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    set_device("cpu")
    try:
        dist, idx = knn(x, None, 5)
    finally:
        set_device(None)
    brute = ((x[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.fill_diagonal(brute, np.inf)
    assert (idx == np.argsort(brute, axis=1, kind="stable")[:, :5]).mean() > 0.999
    assert np.allclose(dist, np.sqrt(np.sort(brute, 1)[:, :5]), atol=1e-4)
    return "faiss CPU kNN through eif equals brute force (500 x 500, k=5)"


# -------------------------------------------------------------------------------------- stage chains
def check_cpu_chain(smoke: Smoke) -> str:
    rec = smoke.launch("cpu_chain", [*CPU_TINY, "device=cpu", f"stages=[{','.join(STAGES)}]"])
    missing = [s for s in STAGES if s not in rec["artifacts"]]
    assert not missing, f"stages without artifacts: {missing}"
    return f"{' -> '.join(STAGES)} on the CPU in {rec['wall_seconds']:.0f} s"


def cuda_chain(smoke: Smoke) -> None:
    """One CUDA run of the whole chain; one result line per stage."""
    from eif.utils.io import load_torch

    t0 = time.perf_counter()
    try:
        rec = smoke.launch("cuda_chain", [*FMNIST, *CUDA, f"stages=[{','.join(STAGES)}]"], timeout=420)
        assert rec["device"]["name"].startswith("cuda"), f"the job ran on {rec['device']}"
        model = load_torch(Path(rec["artifacts"]["train"]) / "model.pt")
        metrics = json.loads((Path(rec["artifacts"]["evaluate"]) / "metrics.json").read_text())
    except Exception as err:
        detail = smoke.failure("cuda chain", err)
        for stage in STAGES:
            smoke.report(f"cuda: {stage}", "FAIL", detail, time.perf_counter() - t0)
        return
    seconds = rec["compute_seconds"]
    details = {
        "train": f"device {model['device']}, precision {model['precision']}, 2 workers",
        "evaluate": f"Recall@1 {metrics['recall@1']:.4f}, MAP@R {metrics['map@r']:.4f}",
    }
    for stage in STAGES:
        ok = stage in rec["artifacts"] and (stage != "train" or model["precision"] == "amp")
        detail = details.get(stage, "artifacts written")
        smoke.report(f"cuda: {stage}", "PASS" if ok else "FAIL", detail, float(seconds.get(stage, 0.0)))


def check_embed_amp(smoke: Smoke) -> str:
    """embed.amp=true embed.channels_last=true against the fp32 features of the same model."""
    base = smoke.runs.get("cuda_chain")
    if base is None:
        raise Skip("needs the CUDA chain's run")
    fast = smoke.launch(
        "cuda_embed_amp", [*FMNIST, *CUDA, "embed.amp=true", "embed.channels_last=true", "stages=[embed]"]
    )
    out = {}
    for split in ("train", "test"):
        a = np.load(Path(base["artifacts"]["embed"]) / f"{split}.npz")
        b = np.load(Path(fast["artifacts"]["embed"]) / f"{split}.npz")
        fa, fb = a["features"].astype(np.float64), b["features"].astype(np.float64)
        za, zb = a["embeddings"].astype(np.float64), b["embeddings"].astype(np.float64)
        assert np.isfinite(fb).all(), "non-finite features under AMP"
        cos = (za * zb).sum(1) / np.linalg.norm(za, axis=1) / np.linalg.norm(zb, axis=1)
        out[split] = (np.abs(fa - fb).max() / np.abs(fa).max(), float(cos.min()))
    from eif.evaluation.knn import knn

    test_a = np.load(Path(base["artifacts"]["embed"]) / "test.npz")["embeddings"]
    test_b = np.load(Path(fast["artifacts"]["embed"]) / "test.npz")["embeddings"]
    same_nn = float((knn(test_a, None, 1)[1] == knn(test_b, None, 1)[1]).mean())
    assert out["test"][1] > 0.99, f"AMP embeddings: min cosine to fp32 {out['test'][1]:.4f}"
    return (
        f"features max |fp16 - fp32| / max |fp32|: train {out['train'][0]:.1e}, test {out['test'][0]:.1e}; "
        f"min embedding cosine {min(v[1] for v in out.values()):.6f}; test 1-NN unchanged for {same_nn:.2%}"
    )


def check_resume(smoke: Smoke) -> str:
    """kill -9 the CUDA training once it has written a mid-epoch checkpoint; the same command resumes."""
    args = [
        "dataset.max_per_class=2000",
        "train.epochs=6",
        "train.warmup_epochs=1",
        "train.checkpoint_every_batches=20",
        "seed=1",
        *CUDA,
        "stages=[train]",
    ]
    log = (smoke.work / "resume_killed.log").open("w")
    proc = subprocess.Popen(
        smoke._command("resume_killed", args),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=smoke.work,
        start_new_session=True,  # its own process group: the kill reaches the DataLoader workers too
    )
    deadline = time.monotonic() + 180
    ckpts: list[Path] = []
    while not ckpts and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        ckpts = sorted((smoke.work / "store" / "train").glob("*.partial*/ckpt/e*-b*.ckpt"))
    if proc.poll() is not None:
        raise RuntimeError(f"training ended (exit {proc.returncode}) before a checkpoint was seen")
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        raise RuntimeError("training ended before it could be killed") from None
    proc.wait()
    log.close()
    rec = smoke.launch("resume_again", args)
    text = (smoke.work / "resume_again.log").read_text()
    line = next((ln for ln in text.splitlines() if "resuming training at" in ln), None)
    assert line is not None, "the second run did not resume (no 'resuming training at' line)"
    assert "train" in rec["artifacts"]
    return f"killed after {ckpts[-1].name}; {line.split(' - ')[-1].strip()}"


def _analyses(influence_dir: Path) -> dict[tuple[str, str], dict[tuple, np.ndarray]]:
    """(kind, method) -> {confusion's test pairs: its scores (N_train,)} from an influence artifact."""
    index = json.loads((influence_dir / "influence.json").read_text())
    out = {}
    for entry in index["analyses"]:
        a = np.load(influence_dir / entry["file"])
        off = a["pair_offsets"]
        out[(entry["kind"], entry["method"])] = {
            tuple(map(tuple, a["pairs"][off[k] : off[k + 1]].tolist())): a["scores"][k]
            for k in range(len(off) - 1)
        }
    return out


def check_agreement(smoke: Smoke) -> str:
    """The CUDA model on the CPU: retrieval metrics and influence scores against the CUDA run."""
    gpu = smoke.runs.get("cuda_chain")
    if gpu is None:
        raise Skip("needs the CUDA chain's run")
    model_pt = Path(gpu["artifacts"]["train"]) / "model.pt"
    cpu = smoke.launch(
        "cpu_from_cuda_model",
        [*FMNIST, "device=cpu", f"model.checkpoint={model_pt}", "stages=[evaluate,embed,mine,influence]"],
        timeout=420,
    )
    m_gpu, m_cpu = (
        json.loads((Path(r["artifacts"]["evaluate"]) / "metrics.json").read_text()) for r in (gpu, cpu)
    )
    gaps = {k: abs(m_gpu[k] - m_cpu[k]) for k in ("recall@1", "map@r")}
    assert all(g <= 0.01 for g in gaps.values()), f"metric gaps {gaps}"
    a_gpu = _analyses(Path(gpu["artifacts"]["influence"]))
    a_cpu = _analyses(Path(cpu["artifacts"]["influence"]))
    corr = {}
    for key in sorted(set(a_gpu) & set(a_cpu)):
        common = sorted(set(a_gpu[key]) & set(a_cpu[key]))
        assert len(common) >= 0.8 * len(a_gpu[key]), f"{key}: only {len(common)} confusions in both runs"
        x = np.concatenate([a_gpu[key][c] for c in common])
        y = np.concatenate([a_cpu[key][c] for c in common])
        corr["/".join(key)] = (float(np.corrcoef(x, y)[0, 1]), len(common))
    low = {k: v for k, v in corr.items() if v[0] <= 0.99}
    assert corr and not low, f"score correlation <= 0.99: {low}"
    return (
        f"Recall@1 gap {gaps['recall@1']:.4f}, MAP@R gap {gaps['map@r']:.4f}; score correlation "
        + ", ".join(f"{k} {c:.4f} ({n})" for k, (c, n) in corr.items())
    )


# --------------------------------------------------------------------------------------------- memory
def inshop_problem(device: torch.device, sizes: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Random features, head, labels and confusion pairs shaped like InShop (``sizes``: n, n_test, d,
    e, c, pairs, batch); the loss is ProxyNCA++ with c classes."""
    from omegaconf import OmegaConf

    from eif.influence import ConfusionTask, build_batch
    from eif.losses.base import LossConfig
    from eif.settings import parse

    g = torch.Generator().manual_seed(seed)
    n, d, e, c = sizes["n"], sizes["d"], sizes["e"], sizes["c"]
    loss_cfg = parse(LossConfig, OmegaConf.load(ROOT / "conf" / "loss" / "proxynca_pp.yaml"), "loss")
    loss = loss_cfg.build(c, e).to(device)
    pairs = torch.randint(0, sizes["n_test"], (sizes["pairs"], 1, 2), generator=g).numpy()
    batch = build_batch(list(pairs))
    return {
        "task": ConfusionTask.from_loss(loss),
        "loss": loss,
        "features": torch.randn(n, d, generator=g).to(device),
        "labels": torch.randint(0, c, (n,), generator=g).to(device),
        "weight": (torch.randn(e, d, generator=g) / d**0.5).to(device),
        "bias": torch.zeros(e).to(device),
        "test_features": torch.randn(sizes["n_test"], d, generator=g).to(device),
        "batch": type(batch)(*(x.to(device) for x in vars(batch).values())),
    }


def peak_memory(device: torch.device, sizes: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(peak GiB, seconds) of EIF, IF (LiSSA, scale=auto) and the re-training of 4 heads per pair + 1
    (eif, random_eif, if, random_if, drift: the retrain stage's heads) over one epoch of ``batch``-size
    batches; peaks are measured above what the inputs hold (CUDA only; 0 elsewhere)."""
    from eif.influence import AttributionProblem, EifConfig, IfConfig, classic_influence, empirical_influence
    from eif.influence.solvers import Lissa
    from eif.retrain.adam import AdamConfig
    from eif.retrain.head import EpochBatches, retrain_heads

    p = inshop_problem(device, sizes)
    problem = AttributionProblem(
        p["task"], p["features"], p["labels"], p["weight"], p["bias"], p["test_features"]
    )
    n = sizes["n"]
    epoch = EpochBatches(
        features=p["features"].cpu().numpy(),
        labels=p["labels"].cpu().numpy(),
        indices=np.arange(n),
        aug_seeds=np.full(n, -1),
        batch_ptr=np.r_[np.arange(0, n, sizes["batch"]), n],
    )
    heads = 4 * sizes["pairs"] + 1
    weights = torch.randint(0, 3, (heads, n), generator=torch.Generator().manual_seed(1)).float()
    runs: dict[str, Callable[[], object]] = {
        "eif": lambda: empirical_influence(problem, p["batch"], EifConfig()),
        "if": lambda: classic_influence(problem, p["batch"], IfConfig(solver=Lissa(scale="auto"))),
        "retrain": lambda: retrain_heads(
            p["weight"],
            p["bias"],
            weights,
            epoch,
            p["loss"].per_sample,
            AdamConfig(lr=4e-5, betas=(0.9, 0.999), eps=1e-8),
            10.0,
            device,
        ),
    }
    out = {}
    cuda = device.type == "cuda"
    for name, run in runs.items():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        result = run()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else 0.0
        scores = getattr(result, "scores", result)
        assert bool(torch.isfinite(scores).all()), f"{name}: non-finite results"
        del result, scores
        out[name] = (peak, seconds)
    return out


def check_memory() -> str:
    peaks = peak_memory(torch.device("cuda"), INSHOP)
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    return (
        f"N={INSHOP['n']}, D={INSHOP['d']}, E={INSHOP['e']}, C={INSHOP['c']}, {INSHOP['pairs']} pairs: "
        + ", ".join(f"{k} {gib:.2f} GiB in {s:.1f} s" for k, (gib, s) in peaks.items())
        + f" (GPU: {total:.0f} GiB)"
    )


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {GROUPS}")
    parser.add_argument("--work", type=Path, default=None, help="work dir (default: a new temporary one)")
    opts = parser.parse_args()
    groups = {g.strip() for g in opts.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    work = opts.work or Path(tempfile.mkdtemp(prefix="eif-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "disabled")

    from eif.utils.device import cuda_problem

    smoke = Smoke(work.resolve(), None if torch.cuda.is_available() else cuda_problem())
    print(f"gpu smoke: work dir {smoke.work}; groups {', '.join(g for g in GROUPS if g in groups)}")
    if smoke.cuda_problem is not None:
        print(f"no usable GPU, so the CUDA checks SKIP: {smoke.cuda_problem}", flush=True)
    t0 = time.perf_counter()
    if "env" in groups:
        smoke.check("env: torch sees CUDA", check_torch_cuda)
        smoke.check("env: faiss GPU agrees with CPU", check_faiss_gpu)
        smoke.check("env: faiss CPU", check_faiss_cpu, cuda=False)
    if "cpu" in groups:
        smoke.check("cpu: train -> retrain", lambda: check_cpu_chain(smoke), cuda=False)
    if "cuda" in groups:
        if smoke.cuda_problem is None:
            cuda_chain(smoke)
        else:
            for stage in STAGES:
                smoke.report(f"cuda: {stage}", "SKIP", "no usable GPU (see above)")
        smoke.check("cuda: embed amp + channels_last", lambda: check_embed_amp(smoke))
    if "resume" in groups:
        smoke.check("resume: kill -9 mid-training", lambda: check_resume(smoke))
    if "agree" in groups:
        smoke.check("agree: CPU vs CUDA, one model", lambda: check_agreement(smoke))
    if "memory" in groups:
        smoke.check("memory: InShop-sized EIF/IF/retrain", check_memory)

    counts = {s: sum(r.status == s for r in smoke.results) for s in ("PASS", "FAIL", "SKIP")}
    print(
        f"\nsummary: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP "
        f"in {time.perf_counter() - t0:.0f} s (logs: {smoke.work})"
    )
    for r in smoke.results:
        print(f"  {r.status:4s}  {r.name}")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
