"""The Python API (eif.api): the README's example runs as written, a given head reproduces a trained one,
and the command line on the written features file reuses the API's results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eif.api import run
from eif.utils.errors import EifError
from eif.utils.io import load_torch, read_json
from tests.conftest import ROOT, launch


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its API example"
    return match[1]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The README example, run in a fresh directory; its namespace and printed output."""
    import contextlib
    import io
    import os

    where = tmp_path_factory.mktemp("api")
    out = io.StringIO()
    namespace: dict[str, Any] = {}
    cwd = os.getcwd()
    os.chdir(where)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(readme_example(), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return {"ns": namespace, "out": out.getvalue(), "dir": where}


def test_readme_example_prints_top_harmful_and_helpful(example: dict[str, Any]) -> None:
    result = example["ns"]["result"]
    printed = example["out"]
    assert printed.count("rank  train") == 2 and "neighbour_class" in printed
    assert 0.5 < result.metrics["recall@1"] <= 1.0
    confusions = result.confusions()
    assert len(confusions) > 0 and (confusions.test_class != confusions.neighbour_class).all()
    assert set(confusions.test_class) <= {"5", "6", "7", "8", "9"}  # test classes keep their names
    harmful = result.top(confusion=0, method="eif", k=5, side="harmful")
    helpful = result.top(confusion=0, method="eif", k=5, side="helpful")
    scores = result.scores("eif", "pair")[0]
    assert (harmful.score > 0).all() and (helpful.score < 0).all()
    assert harmful.score.tolist() == sorted(harmful.score, reverse=True)  # by |score|
    assert np.isclose(harmful.score.iloc[0], scores.max()) and np.isclose(helpful.score.iloc[0], scores.min())
    assert set(harmful["class"]) <= {"0", "1", "2", "3", "4"}
    assert str(harmful.train.iloc[0]) in printed.split("rank  train")[1]


def test_a_given_head_reproduces_the_trained_one(example: dict[str, Any]) -> None:
    """The trained head and proxies, given back as arrays, are imported (no training) and give the same
    confusions and EIF/IF scores."""
    from sklearn.datasets import load_digits

    trained = example["ns"]["result"]
    ck = load_torch(trained.artifact("train") / "model.pt")
    x, y = load_digits(return_X_y=True)
    train, test = y < 5, y >= 5
    given = run(
        x[train],
        y[train],
        torch.as_tensor(x[test]),
        y[test],
        class_names=[str(c) for c in range(10)],
        head=(ck["model"]["head.weight"], ck["model"]["head.bias"]),
        proxies=ck["loss"]["proxies"],
        workdir=example["dir"] / "given",
    )
    assert read_json(given.artifact("train") / "history.json") == []  # imported, not trained
    assert given.confusions().equals(trained.confusions())
    for method in ("eif", "if"):
        np.testing.assert_allclose(given.scores(method), trained.scores(method), rtol=1e-4, atol=1e-7)


def test_the_command_line_reuses_the_api_results(example: dict[str, Any]) -> None:
    result = example["ns"]["result"]
    work = example["dir"] / "eif-api"  # launch() uses <work>/store, the API's store
    (features,) = (work / "inputs").glob("features-*.npz")
    proc = launch(
        ["dataset=features", f"dataset.path={features}", "stages=[influence]", "train.epochs=5"],
        work,
        tiny=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = read_json(work / "run" / "run.json")
    assert record["compute_seconds"] == {}  # nothing computed: every stage reused
    for stage in ("train", "embed", "mine", "influence"):
        assert Path(record["artifacts"][stage]).name == result.artifact(stage).name


def test_given_head_errors_are_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.arange(40) % 4
    w = rng.normal(size=(3, 6))
    with pytest.raises(EifError, match=r"loss=proxynca_pp has learned parameters .*pass them as proxies="):
        run(x, y, x, y + 4, head=(w, None), workdir=tmp_path)
    with pytest.raises(EifError, match=r"expects proxies of shape \(4, 3\), got \(4, 5\)"):
        run(x, y, x, y + 4, head=(w, None), proxies=np.zeros((4, 5)), workdir=tmp_path)
    with pytest.raises(EifError, match=r"the weight must be \(E, D\)"):
        run(x, y, x, y + 4, head=(w[0], None), workdir=tmp_path)
    with pytest.raises(EifError, match="this run has no stats output"):
        run(x, y, x, y + 4, stages=["train"], workdir=tmp_path, overrides=["train.epochs=1"]).table1()


def test_type_errors_are_one_line(tmp_path: Path) -> None:
    """Arguments of the wrong kind are an EifError line, not a numpy or Hydra traceback."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.arange(40) % 4
    words = [["a"] * 6] * 40
    with pytest.raises(EifError, match=r"train_features: expected numbers"):
        run(words, y, x, y + 4, workdir=tmp_path)
    with pytest.raises(EifError, match=r"stages must be a list or tuple of names"):
        run(x, y, x, y + 4, stages="train", workdir=tmp_path)
    with pytest.raises(EifError, match=r"seed must be an integer, got 0.5"):
        run(x, y, x, y + 4, seed=0.5, workdir=tmp_path)  # type: ignore[arg-type]


def test_arguments_are_values_not_override_strings(tmp_path: Path) -> None:
    """A work dir whose path holds characters of Hydra's override grammar (comma, equals, brackets,
    quote) is passed as a value: the run works and its files land there."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 4
    work = tmp_path / "a,b=[c] 'd"
    result = run(x, y, x, y + 4, stages=["train"], workdir=work, overrides=["train.epochs=1"])
    assert result.run_dir.parent == work / "runs"
    assert Path(result.record["artifacts"]["train"]).is_relative_to(work / "store")
    assert result.record["config"]["dataset"]["path"].startswith(str(work / "inputs"))
