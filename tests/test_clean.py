"""Closing the loop: corrected labels from a review file or a ranking, and the clean stage that
re-trains on them with the same recipe and seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eif.mislabel import clean
from eif.utils.errors import EifError


def _review(path: Path, rows: list[tuple[int, int, int | str, str]]) -> Path:
    pd.DataFrame(rows, columns=["id", "old_label_id", "new_label_id", "decision"]).to_csv(path, index=False)
    return path


def test_review_applies_exactly_its_decisions(tmp_path):
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    path = _review(
        tmp_path / "r.csv",
        [(0, 0, 3, "accept"), (2, 2, 4, "change"), (5, 0, 1, "reject"), (6, 1, 1, "accept"), (7, 2, "", "")],
    )
    review = clean.from_review(path, labels, num_classes=5)
    np.testing.assert_array_equal(review.labels, [3, 1, 4, 3, 4, 0, 1, 2])
    assert review.counts == {"accept": 2, "reject": 1, "change": 1}
    np.testing.assert_array_equal(review.changed, [0, 2])  # accepting the current label changes nothing


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(9, 0, 1, "accept")], "outside 0..7: it belongs to another data set"),
        ([(1, 0, 2, "accept")], "says sample 1 has label 0, this run has 1"),
        ([(1, 1, 2, "maybe")], "decision(s) ['maybe']"),
        ([(1, 1, 7, "change")], "new_label_id outside 0..4"),
        ([(1, 1, 2, "accept"), (1, 1, 3, "change")], "decides some training id twice"),
        ([(1, 1, "", "accept")], "needs an integer new_label_id"),
    ],
)
def test_review_from_another_run_or_malformed_is_refused(tmp_path, rows, message):
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    with pytest.raises(EifError, match="clean.labels") as err:
        clean.from_review(_review(tmp_path / "r.csv", rows), labels, num_classes=5)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_columns_and_outcome_counts(tmp_path):
    (tmp_path / "bad.csv").write_text("id,label\n1,2\n")
    with pytest.raises(EifError, match="lacks the column"):
        clean.from_review(tmp_path / "bad.csv", np.zeros(3, dtype=np.int64), 2)
    truth = np.array([0, 1, 2, 3])
    noisy = np.array([1, 1, 0, 3])  # samples 0 and 2 flipped
    new = clean.from_ranking(noisy, np.array([0, 3, 2, 1]), np.array([0, 2, 1, 9]), budget=3)
    np.testing.assert_array_equal(new, [0, 1, 1, 2])
    assert clean.outcome(new, noisy, truth) == {
        "changed": 3,
        "flips_fixed": 1,
        "clean_broken": 1,
        "flips_left": 1,
    }


@pytest.mark.slow
def test_clean_stage_oracle_fixes_every_flip_and_an_empty_review_retrains_the_same_model(
    tmp_path, fmnist_available
):
    """Automatic cleaners on a noisy tiny run, then a review file with no decisions: re-training on
    unchanged labels with the same recipe and seed reproduces the noisy model's metrics exactly."""
    from conftest import compose_cfg

    from eif.pipeline import run_job

    base = ["noise=p10", "stages=[clean]", "mine.num_pairs=10", "methods=[eif]"]
    record = run_job(compose_cfg(tmp_path, [*base, "clean.cleaners=[oracle,eif,random]"]))
    out = Path(record["artifacts"]["clean"])
    info = json.loads((out / "clean.json").read_text())
    rows = {r["variant"]: r for r in info["rows"]}
    assert list(rows) == ["noisy", "oracle", "eif", "random"]
    assert info["n_flipped"] == 30 and info["budget"] == 30
    assert rows["oracle"]["flips_fixed"] == 30 and rows["oracle"]["clean_broken"] == 0
    assert rows["noisy"]["changed"] == 0 and rows["random"]["changed"] <= 30
    assert all(0 <= r["recall@1"] <= 1 for r in rows.values())
    labels = np.load(out / "labels.npz")
    assert (labels["oracle"] != labels["noisy"]).sum() == 30

    empty = _review(tmp_path / "none.csv", [(0, int(labels["noisy"][0]), "", "")])
    record = run_job(compose_cfg(tmp_path, [*base, f"clean.labels={empty}"]))
    again = json.loads((Path(record["artifacts"]["clean"]) / "clean.json").read_text())["rows"]
    assert [r["variant"] for r in again] == ["noisy", "review"]
    assert again[1]["changed"] == 0
    for metric in ("recall@1", "map@r", "nmi"):
        assert again[1][metric] == pytest.approx(again[0][metric], abs=1e-6)


def test_re_trainings_log_their_curves_under_their_own_prefix():
    """A re-training's epochs restart at 1: they go to W&B's next step under clean/<variant>/, with the
    epoch as a value, instead of steps W&B would drop."""
    from eif.logging.run_logger import Prefixed, RunLogger

    class Recorder(RunLogger):
        active = True

        def __init__(self) -> None:
            self.calls: list[tuple[dict, int | None]] = []

        def log(self, metrics, step=None):
            self.calls.append((metrics, step))

    base = Recorder()
    logger = Prefixed(base, "clean/oracle")
    logger.log({"train/loss": 0.5}, step=3)
    assert logger.active and base.calls == [({"clean/oracle/train/loss": 0.5, "clean/oracle/epoch": 3}, None)]
