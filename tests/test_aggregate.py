"""Sweep aggregation: partial sweeps give empty cells, and the Table 1 sweep expands to its jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from eif.tables import robustness
from eif.tables.__main__ import main
from eif.tables.seedstats import NO_CONFUSIONS, ONE_SEED
from eif.tables.sweep import expected_jobs
from eif.tables.table1 import aggregate, compare
from eif.utils.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
PAPER_MODELS = [
    "cub-proxynca_pp-0",
    "cars-proxynca_pp-3",
    "inshop-proxynca_pp-4",
    "cub-softtriple-3",
    "cars-softtriple-4",
    "inshop-softtriple-3",
]


def _job(sweep: Path, num: int, model: str, shift: float) -> None:
    dataset, loss, seed = model.split("-")
    rng = np.random.default_rng(num)
    d_if = rng.normal(0, 0.01, 100)
    rows = compare("pairs", d_if + shift + rng.normal(0, 0.01, 100), d_if, [30, 100]) + compare(
        "groups", d_if[:12] + shift, d_if[:12], [10, 15]
    )
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"table1_model={model}"]), job / ".hydra" / "overrides.yaml")
    write_json(
        job / "stats.json",
        {"rows": rows, "job": {"dataset": dataset, "loss": loss, "seed": int(seed), "noise": "none"}},
    )


def _sweep(tmp_path: Path, done: list[int]) -> Path:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    OmegaConf.save(
        OmegaConf.create(
            {
                "hydra": {
                    "sweeper": {"params": {"table1_model": ",".join(PAPER_MODELS)}},
                    "overrides": {"task": ["logger=none"]},
                },
                "stats": {"pair_sizes": [30, 100], "group_sizes": [10, 15]},
            }
        ),
        sweep / "multirun.yaml",
    )
    for num in done:
        _job(sweep, num, PAPER_MODELS[num], shift=0.02)
    return sweep


def test_expected_jobs_expand_the_sweep_grid(tmp_path):
    sweep = _sweep(tmp_path, [])
    jobs = expected_jobs(sweep)
    assert [j["table1_model"] for j in jobs] == PAPER_MODELS
    assert all(set(j) == {"table1_model"} for j in jobs)  # the fixed logger=none is not a sweep axis


def test_a_sweep_that_lost_jobs_still_aggregates(tmp_path):
    sweep = _sweep(tmp_path, [0, 2, 4])  # cub/proxynca, inshop/proxynca, cars/softtriple finished
    (sweep / "1" / ".hydra").mkdir(parents=True)  # started and crashed: no stats.json
    OmegaConf.save(
        OmegaConf.create(["table1_model=cars-proxynca_pp-3"]), sweep / "1" / ".hydra" / "overrides.yaml"
    )
    table = aggregate(sweep)
    assert len(table) == 6 * 4
    missing = table[table.status == "missing"]
    assert sorted(set(zip(missing.dataset, missing.loss, missing.seed))) == [
        ("cars", "proxynca_pp", 3),
        ("cub", "softtriple", 3),
        ("inshop", "softtriple", 3),
    ]
    assert set(missing[missing.dataset == "cars"].job) == {"1"}
    csv = pd.read_csv(sweep / "table1.csv")
    assert len(csv) == 24 and csv.loc[csv.status == "missing", "pvalue"].isna().all()
    md = (sweep / "table1.md").read_text()
    assert "## Individual confusion (proxynca_pp)" in md and "## Group confusion (softtriple)" in md
    # cub seed 0 groups: EIF wins all 10 groups -> 2^-10; cars (missing) cells are empty.
    group_line = next(line for line in md.splitlines() if line.startswith("| 10 |") and "9.77E-04" in line)
    cells = [c.strip() for c in group_line.strip("|").split("|")]
    assert cells[1:] == ["2.00E-02", "9.77E-04", "", "", "2.00E-02", "9.77E-04"]
    tex = (sweep / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "CUB200 (seed 0)" in tex


def test_not_enough_confusions_shows_as_na(tmp_path):
    sweep = _sweep(tmp_path, [0])
    stats = sweep / "0" / "stats.json"
    record = pd.read_json(stats, typ="series")
    rows = compare("groups", np.ones(12) * 0.1, np.zeros(12), [10, 15, 20])
    write_json(stats, {"rows": rows, "job": dict(record["job"])})
    aggregate(sweep)
    line = next(line for line in (sweep / "table1.md").read_text().splitlines() if line.startswith("| 20 |"))
    assert line.split("|")[2].strip() == "n/a"


def test_cli_on_an_empty_sweep_writes_empty_tables(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2  # neither results nor a sweep: most likely a wrong path
    assert "holds no job results" in capsys.readouterr().err
    write_text(tmp_path / "multirun.yaml", "hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    assert main([str(tmp_path)]) == 0  # a sweep whose jobs have not finished: empty cells
    assert (tmp_path / "table1.csv").exists() and (tmp_path / "table1.md").exists()
    assert main([str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_table1_sweep_launches_six_jobs_and_aggregates(tmp_path):
    """The documented command composes, expands to the paper's six models and aggregates at the end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "launch.py",
        "-m",
        "--config-dir",
        "sweeps",
        "--config-name",
        "table1",
        "stages=[]",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        f"paths.store_dir={tmp_path / 'store'}",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for model in PAPER_MODELS:
        assert f"table1_model={model}" in res.stdout + res.stderr
    assert len(list(sweep.glob("*/.hydra/overrides.yaml"))) == 6
    table = pd.read_csv(sweep / "table1.csv")
    assert set(table.status) == {"missing"}  # no job ran the stats stage
    assert len(table.drop_duplicates(["dataset", "loss", "seed"])) == 6
    assert len(table) == 6 * 10  # five K and five M per job


def _robust_job(sweep: Path, seed: int, shift: float) -> dict[str, np.ndarray]:
    """One job's stats.json as the stats stage writes it, Δd from a seeded generator."""
    rng = np.random.default_rng(seed)
    d_if = rng.normal(0, 0.01, 40)
    deltas = {"eif": d_if + shift + rng.normal(0, 0.01, 40), "if": d_if, "drift": rng.normal(0, 0.01, 40)}
    effects, comparisons = robustness.job_rows(deltas, "pairs", "eif", ["eif", "if"], seed, baseline="if")
    job = sweep / str(seed)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"seed={seed}"]), job / ".hydra" / "overrides.yaml")
    write_json(
        job / "stats.json",
        {
            "rows": [],
            "robustness": {
                "effects": effects,
                "comparisons": comparisons,
                "deltas": {"pairs": {k: v.tolist() for k, v in deltas.items()}},
            },
            "job": {"dataset": "fashion_mnist", "loss": "proxynca_pp", "seed": seed, "noise": "none"},
        },
    )
    return deltas


def test_robustness_table_combines_seeds_at_seed_level(tmp_path):
    """Three seeds of one model: the pre-registered EIF vs IF is one-sided, every other comparison
    two-sided; the combined row's tests are scipy's on the seed means, the mixed model's, and
    Stouffer's (labelled conditional) on the per-seed one-sided p-values."""
    sweep = tmp_path / "sweep"
    jobs = [_robust_job(sweep, seed, 0.004) for seed in range(3)]
    aggregate(sweep)
    per_seed = pd.read_csv(sweep / "table1_robustness_seeds.csv")
    assert list(per_seed.seed.unique()) == [0, 1, 2]
    drift = per_seed[(per_seed.b == "drift") & (per_seed.seed == 1)].iloc[0]
    assert drift.alternative == "two-sided"
    assert drift.pvalue == pytest.approx(stats.ttest_rel(jobs[1]["eif"], jobs[1]["drift"]).pvalue, rel=1e-9)
    combined = pd.read_csv(sweep / "table1_robustness.csv")
    row = combined[(combined.a == "eif") & (combined.b == "if")].iloc[0]
    assert row.jobs == 3 and row.seeds == "0 1 2" and row.alternative == "greater"
    means = [(d["eif"] - d["if"]).mean() for d in jobs]
    assert row["mean"] == pytest.approx(np.mean(means))
    assert row.t_pvalue == pytest.approx(stats.ttest_1samp(means, 0.0, alternative="greater").pvalue)
    assert row.w_pvalue == pytest.approx(stats.wilcoxon(means, alternative="greater").pvalue)
    within = [stats.ttest_rel(d["eif"], d["if"], alternative="greater").pvalue for d in jobs]
    assert row.stouffer_pvalue == pytest.approx(stats.combine_pvalues(within, method="stouffer").pvalue)
    mixed = robustness.across_seeds([d["eif"] - d["if"] for d in jobs], "greater", seed=0)["mixed_pvalue"]
    assert row.mixed_pvalue == pytest.approx(mixed) and 0 < mixed < 1
    row = combined[(combined.a == "eif") & (combined.b == "drift")].iloc[0]
    assert row.alternative == "two-sided"
    assert row.t_pvalue == pytest.approx(
        stats.ttest_1samp([(d["eif"] - d["drift"]).mean() for d in jobs], 0).pvalue
    )
    text = (sweep / "table1_robustness.md").read_text()
    assert "| seed 0 | seed 1 | seed 2 | across seeds | mixed model p |" in text
    assert "Stouffer p (conditional on these models)" in text
    assert "| eif | if | a > b (pre-registered) |" in text and "| eif | drift | two-sided |" in text


def test_robustness_with_one_seed_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    _robust_job(sweep, 0, 0.004)
    aggregate(sweep)
    combined = pd.read_csv(sweep / "table1_robustness.csv")
    assert set(combined.status) == {ONE_SEED} and combined.t_pvalue.isna().all()
    assert ONE_SEED in (sweep / "table1_robustness.md").read_text()


def test_lds_sweep_table_summarises_seeds(tmp_path):
    """The LDS tables of a sweep: mean, sd and range over the jobs' LDS per method and horizon."""

    sweep = tmp_path / "sweep"
    values = {0: (0.6, 0.1), 1: (0.7, -0.05), 2: (0.8, 0.0)}
    for seed, (informed, rand) in values.items():
        job = sweep / str(seed)
        (job / ".hydra").mkdir(parents=True)
        (job / "artifacts" / "lds").mkdir(parents=True)
        cfg = {"seed": seed, "dataset": {"name": "fashion_mnist"}, "loss": {"name": "proxynca_pp"}}
        OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
        rows = [
            {
                "kind": "pair",
                "method": m,
                "horizon": 1,
                "lds": v,
                "low": v - 0.1,
                "high": v + 0.1,
                "per_seed": [v],
            }
            for m, v in (("eif", informed), ("random", rand))
        ]
        removal = [
            {"kind": "pair", "k": 10, "removed": "random", "mean_delta": 0.0},
            {
                "kind": "pair",
                "k": 10,
                "removed": "eif",
                "mean_delta": 1e-3,
                "vs_random": 1e-3,
                "pvalue": 0.01,
            },
        ]
        ceilings = [{"kind": "pair", "horizon": 1, "ceiling": 0.9}]
        write_json(
            job / "artifacts" / "lds" / "lds.json", {"rows": rows, "ceilings": ceilings, "removal": removal}
        )
    assert main([str(sweep)]) == 0
    summary = pd.read_csv(sweep / "lds_summary.csv")
    eif = summary[summary.method == "eif"].iloc[0]
    assert eif["mean"] == pytest.approx(0.7) and eif["sd"] == pytest.approx(0.1) and eif["jobs"] == 3
    assert (eif["low"], eif["high"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert eif["ci_low"] == pytest.approx(0.6) and eif["ci_high"] == pytest.approx(0.8)  # 3 seeds
    compare = pd.read_csv(sweep / "lds_compare.csv").iloc[0]
    diffs = [informed - rand for informed, rand in values.values()]  # eif minus random, per seed
    assert (compare.a, compare.b, compare.n_seeds) == ("eif", "random", 3)
    assert compare["mean"] == pytest.approx(np.mean(diffs))
    assert compare.t_pvalue == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    assert compare.w_pvalue == pytest.approx(stats.wilcoxon(diffs).pvalue)
    assert compare.status == NO_CONFUSIONS and np.isnan(compare.mixed_pvalue)
    removal = pd.read_csv(sweep / "lds_removal.csv")
    row = removal[removal.removed == "eif"].iloc[0]
    # three seeds whose gain is 1e-3 each: no variation over seeds, so no t-test; Stouffer (labelled
    # conditional) folds the three one-sided p = 0.01 to two-sided
    assert row.n_seeds == 3 and np.isnan(row.t_pvalue) and "degenerate" in row.status
    one_sided = stats.combine_pvalues([0.01] * 3, method="stouffer").pvalue
    assert row.stouffer_pvalue == pytest.approx(2 * one_sided)
    text = (sweep / "lds.md").read_text()
    assert "| eif | 0.700 ± 0.100 [0.600, 0.800] |" in text and "noise ceiling" in text
    assert "LDS of eif minus each method's" in text and "Stouffer p (conditional on these models)" in text


def test_lds_sweep_with_one_seed_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / "artifacts" / "lds").mkdir(parents=True)
    cfg = {"seed": 0, "dataset": {"name": "fashion_mnist"}, "loss": {"name": "proxynca_pp"}}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    rows = [{"kind": "pair", "method": m, "horizon": 1, "lds": v} for m, v in (("eif", 0.6), ("if", 0.5))]
    write_json(job / "artifacts" / "lds" / "lds.json", {"rows": rows, "ceilings": [], "removal": []})
    assert main([str(sweep)]) == 0
    assert pd.read_csv(sweep / "lds_compare.csv").status.tolist() == [ONE_SEED]
    assert ONE_SEED in (sweep / "lds.md").read_text()


@pytest.mark.parametrize(
    ("name", "stage", "methods"),
    [
        ("table1_fmnist", "stats", ["eif", "if", "if_converged", "if_converged_low", "grad_dot"]),
        ("lds", "lds", ["eif", "if", "if_converged", "grad_dot", "grad_cos", "representer", "random"]),
        ("clean_fmnist", "clean", ["eif", "if"]),
    ],
)
def test_fashion_mnist_sweeps_compose_their_experiment(name, stage, methods):
    """The 5-seed sweeps in docs/science.md pick their experiment (methods, stages) and five seeds."""
    cmd = [sys.executable, "launch.py", "--config-dir", "sweeps", "--config-name", name, "--cfg", "all"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert list(cfg.methods) == methods and cfg.stages[-1] == stage
    assert cfg.hydra.sweeper.params.seed == ("range(3)" if name == "clean_fmnist" else "range(5)")


def test_clean_sweep_table_averages_seeds_and_gains(tmp_path):
    """The cleaning tables of a sweep: per variant the mean and sd over seeds of the counts and metrics,
    and each metric's gain over the same seed's noisy model; the Table 1 files are not written."""
    sweep = tmp_path / "sweep"
    OmegaConf.save(
        OmegaConf.create({"hydra": {"sweeper": {"params": {"seed": "range(2)"}}}}), tmp_path / "m.yaml"
    )
    for seed, (noisy, oracle) in {0: (0.80, 0.86), 1: (0.82, 0.85)}.items():
        job = sweep / str(seed)
        (job / ".hydra").mkdir(parents=True)
        (job / "artifacts" / "clean").mkdir(parents=True)
        cfg = {
            "seed": seed,
            **{k: {"name": v} for k, v in (("dataset", "fmnist"), ("loss", "p"), ("noise", "p10"))},
        }
        OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
        rows = [
            {
                "variant": "noisy",
                "changed": 0,
                "flips_fixed": 0,
                "clean_broken": 0,
                "recall@1": noisy,
                "map@r": 0.3,
            },
            {
                "variant": "oracle",
                "changed": 50,
                "flips_fixed": 50,
                "clean_broken": 0,
                "recall@1": oracle,
                "map@r": 0.4,
            },
        ]
        write_json(job / "artifacts" / "clean" / "clean.json", {"rows": rows})
    (sweep / "multirun.yaml").write_text((tmp_path / "m.yaml").read_text())
    assert main([str(sweep)]) == 0
    summary = pd.read_csv(sweep / "clean_summary.csv").set_index("variant")
    assert summary.loc["oracle", "recall@1_mean"] == pytest.approx(0.855)
    assert summary.loc["oracle", "gain_recall@1_mean"] == pytest.approx(0.045)
    assert summary.loc["oracle", "gain_map@r_sd"] == pytest.approx(0.0)
    assert summary.loc["oracle", "jobs"] == 2
    assert (
        "| oracle | 50.0 ± 0.0 | 50.0 ± 0.0 | 0.0 ± 0.0 | 0.8550 ± 0.0071 |"
        in (sweep / "clean.md").read_text()
    )
    gains = pd.read_csv(sweep / "clean_gains.csv").set_index(["variant", "metric"])
    recall = gains.loc[("oracle", "recall@1")]
    assert recall["mean"] == pytest.approx(0.045) and recall.n_seeds == 2
    assert recall.t_pvalue == pytest.approx(stats.ttest_1samp([0.06, 0.03], 0.0).pvalue)
    assert recall.w_pvalue == pytest.approx(stats.wilcoxon([0.06, 0.03]).pvalue)
    assert "degenerate" in gains.loc[("oracle", "map@r")].status  # +0.1 in both seeds
    assert "| oracle | recall@1 | 0.0450 [0.0300, 0.0600] |" in (sweep / "clean.md").read_text()
    assert not (sweep / "table1.md").exists()


def test_comparisons_net_of_random_controls_and_a_second_weighting_scheme(tmp_path):
    """with_net adds Δd_m − Δd_random_m per method; job_rows compares EIF with each method net of its
    own control and repeats every comparison for the magnitude scheme, leaving the sign rows as they
    were; Table 1 gets a magnitude-weighted column pair beside the paper's."""
    rng = np.random.default_rng(0)
    base = {k: rng.normal(0, 0.01, 30) for k in ("eif", "random_eif", "if", "random_if", "drift")}
    sign_effects, sign_rows = robustness.job_rows(base, "pairs", "eif", ["eif", "if"], 0, baseline="if")
    extra = {f"{k}:magnitude": rng.normal(0, 0.01, 30) for k in ("eif", "random_eif", "if", "random_if")}
    deltas = robustness.with_net({**base, **extra})
    assert "net_drift" not in deltas and "net_random_eif" not in deltas
    np.testing.assert_array_equal(
        deltas["net_if:magnitude"], extra["if:magnitude"] - extra["random_if:magnitude"]
    )
    effects, rows = robustness.job_rows(
        deltas, "pairs", "eif", ["eif", "if"], 0, baseline="if", schemes=["sign", "magnitude"]
    )
    assert rows[: len(sign_rows)] == sign_rows and effects[: len(sign_effects)] == sign_effects
    by = {(r["a"], r["b"]): r for r in rows}
    net = by[("net_eif", "net_if")]
    expected = (base["eif"] - base["random_eif"]) - (base["if"] - base["random_if"])
    assert net["mean"] == pytest.approx(expected.mean()) and net["alternative"] == "two-sided"
    assert net["pvalue"] == pytest.approx(stats.ttest_rel(expected, np.zeros(30)).pvalue)
    assert by[("eif:magnitude", "if:magnitude")]["alternative"] == "two-sided"
    assert {("eif:magnitude", "random_eif:magnitude"), ("net_eif:magnitude", "net_if:magnitude")} <= set(by)
    assert by[("eif", "if")]["alternative"] == "greater"

    sweep = tmp_path / "sweep"
    job = sweep / "0"
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["seed=0"]), job / ".hydra" / "overrides.yaml")
    rows = [{**r, "weighting": "sign"} for r in compare("pairs", base["eif"], base["if"], [10, 30])]
    rows += [
        {**r, "weighting": "magnitude"}
        for r in compare("pairs", extra["eif:magnitude"], extra["if:magnitude"], [10, 30])
    ]
    job_id = {"dataset": "fashion_mnist", "loss": "proxynca_pp", "seed": 0, "noise": "none"}
    write_json(job / "stats.json", {"rows": rows, "job": job_id})
    aggregate(sweep)
    text = (sweep / "table1.md").read_text()
    assert "Fashion-MNIST (seed 0): average improvement" in text
    assert "Fashion-MNIST (seed 0), magnitude-weighted: average improvement" in text
    table = pd.read_csv(sweep / "table1.csv")
    assert sorted(table.weighting.unique()) == ["magnitude", "sign"] and len(table) == 4


def test_lds_sweep_shows_protocols_side_by_side(tmp_path):
    """Warm-start and from-scratch LDS of two seeds: one column each, each with its noise ceiling, and
    the comparisons per protocol."""
    sweep = tmp_path / "sweep"
    for seed in range(2):
        job = sweep / str(seed)
        (job / ".hydra").mkdir(parents=True)
        (job / "artifacts" / "lds").mkdir(parents=True)
        cfg = {"seed": seed, "dataset": {"name": "fashion_mnist"}, "loss": {"name": "proxynca_pp"}}
        OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
        rows = [
            {"kind": "pair", "method": m, "protocol": p, "horizon": h, "lds": v + 0.01 * seed}
            for p, h, base in (("warm_start", 1, 0.6), ("scratch", 40, 0.25))
            for m, v in (("eif", base), ("random", 0.0))
        ]
        ceilings = [
            {"kind": "pair", "protocol": "warm_start", "horizon": 1, "ceiling": 0.9},
            {"kind": "pair", "protocol": "scratch", "horizon": 40, "ceiling": 0.5},
        ]
        write_json(
            job / "artifacts" / "lds" / "lds.json", {"rows": rows, "ceilings": ceilings, "removal": []}
        )
    main([str(sweep)])
    text = (sweep / "lds.md").read_text()
    assert "| method | warm-start, 1 epoch | from scratch, 40 epochs |" in text
    assert "| eif | 0.605 ± 0.007 [0.600, 0.610] | 0.255 ± 0.007 [0.250, 0.260] |" in text
    assert "| *noise ceiling* | 0.900 ± 0.000 [0.900, 0.900] | 0.500 ± 0.000 [0.500, 0.500] |" in text
    compare = pd.read_csv(sweep / "lds_compare.csv")
    assert sorted(compare.protocol) == ["scratch", "warm_start"]
    assert compare.set_index("protocol").loc["scratch", "mean"] == pytest.approx(0.25)  # eif − random
