"""The retrain and stats stages end to end on a tiny Fashion-MNIST run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_cfg

from eif.pipeline import run_job

# LiSSA's scale 500 suits the ResNet head; the tiny 2-epoch CNN's head needs a larger one to stay finite.
SMALL = [
    "mine.num_pairs=20",
    "progress=false",
    "methods.if.solver.scale=20000",
    "stats.pair_sizes=[5,20,30]",
    "stats.group_sizes=[2,3,5]",
    "retrain.num_workers=0",
]


@pytest.mark.slow
def test_retrain_and_stats_stages(tmp_path: Path, fmnist_available) -> None:
    record = run_job(compose_cfg(tmp_path, ["stages=[retrain,stats]", *SMALL]))
    out = Path(record["artifacts"]["retrain"])
    info = json.loads((out / "retrain.json").read_text())
    n_groups = info["counts"]["group"]
    assert info["counts"]["pair"] == 20 and 1 <= n_groups <= 5
    # per confusion: eif, if and their random controls; plus one drift head for all confusions
    assert info["num_heads"] == 4 * (20 + n_groups) + 1 and info["retrain_seconds"] > 0
    assert info["labels"] == ["eif", "random_eif", "if", "random_if", "drift"]
    d = np.load(out / "distances.npz")
    infl = Path(record["artifacts"]["influence"])
    for kind, n in (("pair", 20), ("group", n_groups)):
        # d(theta0) agrees with the influence stage's own d0 for the same confusions.
        d0_influence = np.load(infl / f"{kind}_eif.npz")["d0"]
        np.testing.assert_allclose(d[f"{kind}_d0"], d0_influence, rtol=1e-4, atol=1e-6)
        for m in ("eif", "if", "random_eif", "random_if", "drift"):
            np.testing.assert_allclose(d[f"{kind}_delta_{m}"], d[f"{kind}_d1_{m}"] - d[f"{kind}_d0"])
            assert d[f"{kind}_delta_{m}"].shape == (n,) and np.abs(d[f"{kind}_delta_{m}"]).max() > 0
        # the random control keeps the method's counts of 0s and 2s but moves them: other results
        assert not np.allclose(d[f"{kind}_delta_eif"], d[f"{kind}_delta_random_eif"])
    assert (tmp_path / "run" / "artifacts" / "retrain_features" / "epoch.npz").exists()
    table = pd.read_csv(out / "distances.csv")
    assert len(table) == 5 * (20 + n_groups)

    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["job"] == {
        "dataset": "fashion_mnist",
        "model": "small_cnn",
        "loss": "proxynca_pp",
        "seed": 0,
        "noise": "none",
    }
    by = {(r["kind"], r["n"]): r for r in stats["rows"]}
    assert by[("pairs", 30)]["status"] == "not enough confusions" and by[("pairs", 30)]["pvalue"] is None
    assert by[("pairs", 20)]["status"] == "ok"
    improvement = np.mean(d["pair_delta_eif"] - d["pair_delta_if"])
    assert by[("pairs", 20)]["improvement"] == pytest.approx(improvement)
    assert (by[("groups", 5)]["status"] == "ok") == (n_groups == 5)
    comparisons = {(r["kind"], r["a"], r["b"]): r for r in stats["robustness"]["comparisons"]}
    assert set(comparisons) >= {
        ("pairs", "eif", "if"),
        ("pairs", "eif", "random_eif"),
        ("pairs", "if", "drift"),
    }
    c = comparisons[("pairs", "eif", "if")]
    assert (
        c["mean"] == pytest.approx(improvement)
        and c["low"] <= c["mean"] <= c["high"]
        and 0 <= c["pvalue"] <= 1
    )
    effects = {(r["kind"], r["label"]): r for r in stats["robustness"]["effects"]}
    net = np.mean(d["pair_delta_eif"] - d["pair_delta_drift"])
    assert effects[("pairs", "eif")]["net_mean"] == pytest.approx(net)
    assert "net of drift" in (tmp_path / "run" / "table1_robustness.md").read_text()

    # Equal weights for helpful and harmful samples: every head trains identically, so Δd_EIF = Δd_IF.
    same = run_job(
        compose_cfg(
            tmp_path,
            ["stages=[retrain]", "retrain.weights.helpful=1.0", "retrain.weights.harmful=1.0", *SMALL],
        )
    )
    d_same = np.load(Path(same["artifacts"]["retrain"]) / "distances.npz")
    for label in ("if", "random_eif", "drift"):
        np.testing.assert_allclose(d_same["pair_delta_eif"], d_same[f"pair_delta_{label}"], rtol=0, atol=1e-6)
    assert same["keys"]["retrain"] != record["keys"]["retrain"]
    # ... and reused the stored epoch features: one store entry for both re-training configs.
    assert len(list((tmp_path / "store" / "retrain_features").glob("*/MANIFEST.json"))) == 1

    # The magnitude scheme beside the sign one: the sign re-trainings are bit-identical to the run
    # above, the magnitude ones differ, and Table 1 gets a magnitude-weighted column.
    both = run_job(
        compose_cfg(tmp_path, ["stages=[retrain,stats]", "retrain.weights.schemes=[sign,magnitude]", *SMALL])
    )
    out2 = Path(both["artifacts"]["retrain"])
    info2 = json.loads((out2 / "retrain.json").read_text())
    assert info2["labels"] == [
        "eif",
        "random_eif",
        "eif:magnitude",
        "random_eif:magnitude",
        "if",
        "random_if",
        "if:magnitude",
        "random_if:magnitude",
        "drift",
    ]
    d2 = np.load(out2 / "distances.npz")
    for label in ("eif", "if", "random_eif", "drift"):
        np.testing.assert_array_equal(d2[f"pair_delta_{label}"], d[f"pair_delta_{label}"])
    assert not np.allclose(d2["pair_delta_eif:magnitude"], d2["pair_delta_eif"])
    stats2 = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert {r["weighting"] for r in stats2["rows"]} == {"sign", "magnitude"}
    pairs2 = {(r["a"], r["b"]) for r in stats2["robustness"]["comparisons"] if r["kind"] == "pairs"}
    assert {("net_eif", "net_if"), ("eif:magnitude", "if:magnitude")} <= pairs2
    assert "magnitude-weighted" in (tmp_path / "run" / "table1.md").read_text()


@pytest.mark.slow
def test_retrain_on_eval_features(tmp_path: Path, fmnist_available) -> None:
    record = run_job(
        compose_cfg(tmp_path, ["stages=[retrain]", "retrain.features=eval", "retrain.kinds=[group]", *SMALL])
    )
    info = json.loads((Path(record["artifacts"]["retrain"]) / "retrain.json").read_text())
    assert info["features"] == "eval" and set(info["counts"]) == {"group"}
    assert not (tmp_path / "run" / "artifacts" / "retrain_features").exists()
