"""The mine and influence stages end to end on a tiny Fashion-MNIST run, and the artifacts' format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg

from eif.influence.results import split_by_sign
from eif.pipeline import run_job


def test_split_by_sign_orders_by_magnitude():
    s = np.array([[0.5, -2.0, 0.0, 3.0, -0.1], [0.0, 0.0, 1.0, 0.0, 0.0]])
    out = split_by_sign(s)
    assert out["harmful"].tolist() == [3, 0, 2] and out["harmful_offsets"].tolist() == [0, 2, 3]
    assert out["helpful"].tolist() == [1, 4] and out["helpful_offsets"].tolist() == [0, 2, 2]


@pytest.mark.slow
def test_mine_and_influence_stages(tmp_path: Path, fmnist_available, capfd) -> None:
    cfg = compose_cfg(
        tmp_path,
        [
            "stages=[mine,influence]",
            "influence.kinds=[pair,group,missim]",
            "mine.num_pairs=20",
            "mine.num_missim=5",
            "progress=false",
            # the 2-epoch model is far from a minimum: per-sample curvature ~6e3
            "methods.if.solver.scale=20000",
        ],
    )
    record = run_job(cfg)
    out = Path(record["artifacts"]["influence"])
    mine = np.load(Path(record["artifacts"]["mine"]) / "mine.npz")
    info = json.loads((out / "influence.json").read_text())
    assert {(e["kind"], e["method"]) for e in info["analyses"]} == {
        (k, m) for k in ("pair", "group", "missim") for m in ("eif", "if")
    }
    n_train = info["n_train"]
    assert 1 <= len(mine["group_class"]) <= 5  # 5 test classes
    for e in info["analyses"]:
        arr = np.load(out / e["file"])
        k = e["num_confusions"]
        assert arr["scores"].shape == (k, n_train) and np.isfinite(arr["scores"]).all()
        assert np.abs(arr["scores"]).max() > 0
        first = arr["harmful"][arr["harmful_offsets"][0] : arr["harmful_offsets"][1]]
        assert (arr["scores"][0, first] > 0).all()
        if e["kind"] == "pair":
            np.testing.assert_allclose(arr["d0"], mine["pair_d"], rtol=1e-3, atol=1e-5)
        if e["method"] == "eif":
            delta = arr["delta_d"][:, 0]
            assert (delta > 0).all() if e["kind"] != "missim" else (delta < 0).all()
    # IF diagnostics, once per method: Hessian eigenvalues above lambda = 20000 * 0.01
    assert (
        set(info["diagnostics"]["methods"]) == {"eif", "if"} and info["diagnostics"]["methods"]["eif"] == {}
    )
    eig = info["diagnostics"]["methods"]["if"]["eigenvalues_above_damping"]
    assert eig["damping"] == pytest.approx(200.0) and 0 <= eig["count"] <= eig["lanczos_steps"]
    ratio = info["diagnostics"]["stationarity_ratio"]
    assert 0 < ratio < 1
    err = capfd.readouterr().err
    assert ("W0 is far from a stationary point" in err) == (ratio > info["diagnostics"]["stationarity_warn"])
