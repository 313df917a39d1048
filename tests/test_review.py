"""The review page: which suggestions it lists and in what order, its size at scale, and a person's
session in real headless Chromium (Selenium): accept 3, reject 2, change 1, export the CSV."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eif.influence.artifacts import Influence
from eif.mislabel import knn
from eif.report import review
from eif.report.samples import load_samples
from eif.utils import csvsafe
from eif.utils.io import read_json, write_json, write_text
from tests.browser import browser, downloads, images_state, wait_for_file  # noqa: F401 - fixtures
from tests.report_outputs import loader, make_outputs, rgb_loader

SETTINGS = review.ReviewSettings(rows="changes", limit=None, px=64, examples=3)


def _data(page: str) -> dict[str, Any]:
    m = re.search(r'<script id="review-data" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_suggestions_union_order_and_filter(tmp_path: Path) -> None:
    out = make_outputs(tmp_path)
    samples = load_samples(out["embed"])
    scores = Influence(out["influence"]).group_scores(0)
    k = int(read_json(out["relabel"] / "relabel.json")["k"])
    every, total, by_eif = review.suggestions(samples, scores, "eif", "harmful", k, "all", None)
    assert (total, by_eif) == (len(every), int((scores["eif"] > 0).sum()))
    # Queried: every sample some method flags (positive score), with Algorithm 1's suggestion.
    flagged = np.flatnonzero((scores["eif"] > 0) | (scores["if"] > 0))
    assert sorted(every.id) == flagged.tolist()
    hard, soft, _ = knn.recommend(samples.train.embeddings, samples.train.labels, 4, flagged, k)
    by_id = dict(zip(flagged.tolist(), hard.tolist()))
    assert all(by_id[i] == s for i, s in zip(every.id, every.suggested))
    # Flags hold exactly the flagging methods, with rank 1 = the highest score.
    for row in every.itertuples():
        assert set(row.flags) == {m for m in scores if scores[m][row.id] > 0}
        for m, (score, rank) in row.flags.items():
            assert isinstance(score, float) and score == scores[m][row.id]
            assert rank == 1 + int((scores[m] > scores[m][row.id]).sum())
    # Review order: best rank over the flagging methods, so each method's top suggestion comes first.
    assert every.priority.is_monotonic_increasing
    assert {every.id.iloc[0], every.id.iloc[1]} == {
        int(np.argmax(scores["eif"])),
        int(np.argmax(scores["if"])),
    }
    changes, total, by_eif = review.suggestions(samples, scores, "eif", "harmful", k, "changes", None)
    # The suggestions EIF flags are the relabel stage's "would change label"; the rest only IF flags.
    assert total == len(changes) and by_eif == read_json(out["relabel"] / "relabel.json")["changes_label"]
    assert by_eif == sum("eif" in f for f in changes["flags"]) <= total
    assert (changes.label != changes.suggested).all()
    assert changes.id.tolist() == [i for i, lab, s in zip(every.id, every.label, every.suggested) if lab != s]
    assert (
        review.suggestions(samples, scores, "eif", "harmful", k, "changes", 5)[0].id.tolist()
        == changes.id[:5].tolist()
    )
    # queries=all: every training sample is queried.
    assert (
        len(review.suggestions(samples, scores, "eif", "all", k, "all", None)[0]) == samples.train.labels.size
    )


@pytest.mark.parametrize("num_classes", [2, 4])
def test_votes_in_chunks_match_algorithm_1(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, 300)
    emb = (rng.normal(size=(num_classes, 8))[labels] + rng.normal(size=(300, 8))).astype(np.float32)
    queries = np.sort(rng.choice(300, 50, replace=False))
    hard, top, share = review.votes(emb, labels, num_classes, queries, 9, chunk=7)
    ref_hard, soft, _ = knn.recommend(emb, labels, num_classes, queries, 9)
    np.testing.assert_array_equal(hard, ref_hard)
    n = min(3, num_classes)
    np.testing.assert_allclose(share[:, :n], -np.sort(-soft, axis=1)[:, :n])
    np.testing.assert_allclose(np.take_along_axis(soft, top[:, :n], axis=1), share[:, :n])
    assert np.all(share[:, n:] == 0)


def test_page_is_self_contained_and_bounded(tmp_path: Path) -> None:
    """Colour photos of 300 x 200 become thumbnails of at most 64 px; the page grows by a few KB per
    suggestion; no string of the data can close the script element."""
    out = make_outputs(tmp_path, paths=True)
    info = read_json(out["embed"] / "embed.json")
    info["train_class_names"][0] = "T-shirt</script><b>"
    write_json(out["embed"] / "embed.json", info)
    cfg = review.ReviewSettings(rows="all", limit=None, px=64, examples=3)
    page = review.build("review", "run", out, 0, rgb_loader, cfg)
    data = _data(page)
    assert data["classes"][0] == "T-shirt</script><b>" and "T-shirt</script>" not in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    rows = data["rows"]
    assert len(rows) > 100
    images = [r["img"] for r in rows] + [e["img"] for ex in data["examples"].values() for e in ex]
    for uri in images[:20]:
        head, b64 = uri.split(",", 1)
        assert head == "data:image/jpeg;base64"
        assert max(Image.open(io.BytesIO(base64.b64decode(b64))).size) <= 64
    assert len(page) < 4000 * len(images) + 30000
    assert rows[0]["path"].endswith(".png") and "/" in rows[0]["path"]
    # The limit caps the rows (most harmful first), and so the size.
    small = review.build("review", "run", out, 0, rgb_loader, review.ReviewSettings("all", 10, 64, 0))
    assert [r["id"] for r in _data(small)["rows"]] == [r["id"] for r in rows[:10]]
    assert len(small) < len(page) / 5


def _card(drv: Any, i: int) -> Any:
    from selenium.webdriver.common.by import By

    return drv.find_element(By.CSS_SELECTOR, f'.card[data-id="{i}"]')


def _ids_shown(drv: Any) -> list[int]:
    from selenium.webdriver.common.by import By

    return [int(c.get_attribute("data-id")) for c in drv.find_elements(By.CSS_SELECTOR, ".card")]


def _select(drv: Any, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(drv.find_element(By.ID, element_id)).select_by_visible_text(text)


def test_review_session_in_chromium(tmp_path: Path, browser: Any, downloads: Path) -> None:  # noqa: F811
    """Accept 3 suggestions, reject 2 and change 1 label (across filters and pages, one accept
    undone), reload (decisions persist), export: the CSV holds exactly those 6 decisions."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out = make_outputs(tmp_path, paths=True)
    info = read_json(out["embed"] / "embed.json")
    classes = ["T-shirt/top", 'Trouser, "long"', "Pullover", "Dress"]  # a comma and quotes to escape
    info["train_class_names"] = classes
    write_json(out["embed"] / "embed.json", info)
    page = tmp_path / "review.html"
    write_text(
        page, review.build("review test", "run", out, 0, loader, review.ReviewSettings("all", None, 64, 3))
    )
    data = _data(page.read_text())
    rows = {r["id"]: r for r in data["rows"]}
    browser.get(page.as_uri())
    assert images_state(browser)["broken"] == 0
    assert browser.find_element(By.ID, "counts").text.startswith(f"{len(rows)} suggestions")

    first = _ids_shown(browser)
    assert len(first) == 50 and first == [r["id"] for r in data["rows"][:50]]
    expect: dict[int, tuple[str, int]] = {}
    for i in first[:4]:
        _card(browser, i).find_element(By.CSS_SELECTOR, "button.accept").click()
        expect[i] = ("accept", rows[i]["suggested"])
    _card(browser, first[3]).find_element(By.CSS_SELECTOR, "button.accept").click()  # undo
    del expect[first[3]]
    assert "accept" in _card(browser, first[0]).get_attribute("class").split()

    # Reject two Trouser-labelled suggestions that are still open, found through the class filter.
    _select(browser, "f-current", classes[1])
    _select(browser, "f-status", "not reviewed")
    shown = _ids_shown(browser)
    assert shown and all(rows[i]["label"] == 1 and i not in expect for i in shown)
    for i in shown[:2]:
        _card(browser, i).find_element(By.CSS_SELECTOR, "button.reject").click()
        expect[i] = ("reject", rows[i]["label"])
    assert not set(expect) & set(_ids_shown(browser))  # reviewed ones leave the "not reviewed" view

    # Change one label among IF's suggestions on the second page of 20.
    _select(browser, "f-current", "any")
    _select(browser, "f-status", "all")
    _select(browser, "f-method", "IF")
    _select(browser, "f-size", "20")
    browser.find_element(By.ID, "next").click()
    assert "page 2 of" in browser.find_element(By.ID, "page-info").text
    target = next(i for i in _ids_shown(browser) if i not in expect and "if" in rows[i]["flags"])
    new = next(c for c in range(len(classes)) if c not in (rows[target]["label"], rows[target]["suggested"]))
    choice = _card(browser, target).find_element(By.CSS_SELECTOR, "select.choose")
    choice.click()  # the class options are added when the dropdown is opened
    Select(choice).select_by_visible_text(classes[new])
    expect[target] = ("change", new)

    browser.refresh()  # decisions survive a reload (localStorage)
    assert browser.find_element(By.ID, "export").text == "Export 6 decisions (CSV)"
    browser.find_element(By.ID, "export").click()
    csv = pd.read_csv(
        wait_for_file(downloads, "corrected_labels.csv"), dtype={"path": str}, keep_default_na=False
    )
    assert list(csv.columns) == list(review.CSV_COLUMNS)
    assert len(csv) == 6 and sorted(csv.id) == sorted(expect)
    assert (csv.decision.value_counts().to_dict()) == {"accept": 3, "reject": 2, "change": 1}
    for r in csv.itertuples(index=False):
        decision, label = expect[r.id]
        row = rows[r.id]
        assert (r.decision, r.new_label_id, r.old_label_id) == (decision, label, row["label"])
        assert (r.old_label, r.new_label) == (classes[row["label"]], classes[label])
        assert r.path == info["paths"]["train"][r.id]


def test_report_and_review_render_in_chromium(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    """Every image of report.html and review.html decodes (naturalWidth > 0); the screenshot is a page."""
    from eif.report import run_report
    from tests.report_outputs import CFG

    out = make_outputs(tmp_path)
    write_text(tmp_path / "report.html", run_report.build("r", "", out, CFG, 0, loader, loader))
    write_text(tmp_path / "review.html", review.build("review", "run", out, 0, loader, SETTINGS))
    for name, least in (("report.html", 100), ("review.html", 20)):
        browser.get((tmp_path / name).as_uri())
        state = images_state(browser)
        assert state["images"] >= least and state["broken"] == 0, (name, state)
    browser.get((tmp_path / "report.html").as_uri())
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
    assert shot.size[0] >= 1000 and len(np.unique(np.asarray(shot))) > 20


def test_bulk_decisions_and_clear_in_chromium(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    """ "Accept the open ones on this page" decides exactly the shown, undecided cards; "Clear" (after
    confirming) forgets every decision."""
    from selenium.webdriver.common.by import By

    out = make_outputs(tmp_path)
    page = tmp_path / "review.html"
    write_text(
        page, review.build("review", "bulk", out, 0, loader, review.ReviewSettings("all", None, 64, 0))
    )
    browser.get(page.as_uri())
    _select(browser, "f-size", "20")
    first = _ids_shown(browser)
    _card(browser, first[0]).find_element(By.CSS_SELECTOR, "button.reject").click()
    browser.find_element(By.ID, "accept-page").click()
    counts = browser.find_element(By.ID, "counts").text
    assert "19 accepted, 1 rejected, 0 changed" in counts
    assert "reject" in _card(browser, first[0]).get_attribute("class").split()
    _select(browser, "f-status", "not reviewed")
    assert not set(first) & set(_ids_shown(browser))
    browser.find_element(By.ID, "clear").click()
    browser.switch_to.alert.accept()
    assert "0 accepted, 0 rejected, 0 changed" in browser.find_element(By.ID, "counts").text
    assert _ids_shown(browser)[:20] == first


@pytest.mark.slow
def test_review_page_decisions_are_what_clean_applies(
    tmp_path: Path,
    browser: Any,  # noqa: F811
    downloads: Path,  # noqa: F811
    fmnist_available: None,
) -> None:
    """A real noisy run's review.html: accept 3, reject 2, change 1, export; ``clean.labels=<export>``
    then re-trains on labels that differ from the noisy ones at exactly the 3 accepted and 1 changed
    samples, with the chosen labels."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from eif.pipeline import run_job
    from tests.conftest import compose_cfg

    base = ["noise=p10", "mine.num_pairs=10", "methods=[eif]"]
    record = run_job(compose_cfg(tmp_path, [*base, "stages=[relabel,report]"]))
    page = tmp_path / "run" / "review.html"
    rows = {r["id"]: r for r in _data(page.read_text())["rows"]}
    browser.get(page.as_uri())
    shown = _ids_shown(browser)
    assert len(shown) >= 6
    expect: dict[int, tuple[str, int]] = {}
    for i in shown[:3]:
        _card(browser, i).find_element(By.CSS_SELECTOR, "button.accept").click()
        expect[i] = ("accept", rows[i]["suggested"])
    for i in shown[3:5]:
        _card(browser, i).find_element(By.CSS_SELECTOR, "button.reject").click()
        expect[i] = ("reject", rows[i]["label"])
    target = shown[5]
    new = next(c for c in range(5) if c not in (rows[target]["label"], rows[target]["suggested"]))
    choice = _card(browser, target).find_element(By.CSS_SELECTOR, "select.choose")
    choice.click()
    Select(choice).select_by_value(str(new))
    expect[target] = ("change", new)
    browser.find_element(By.ID, "export").click()
    exported = wait_for_file(downloads, "corrected_labels.csv")
    assert len(pd.read_csv(exported)) == 6

    cleaned = run_job(compose_cfg(tmp_path / "c", [*base, "stages=[clean]", f"clean.labels={exported}"]))
    assert cleaned["keys"]["train"] == record["keys"]["train"]  # the same noisy model and data
    with np.load(Path(cleaned["artifacts"]["clean"]) / "labels.npz") as z:
        noisy, labels = z["noisy"], z["review"]
    changed = np.flatnonzero(labels != noisy)
    acting = sorted(i for i, (d, _) in expect.items() if d != "reject")
    assert changed.tolist() == acting
    assert all(labels[i] == expect[i][1] for i in acting)
    summary = read_json(Path(cleaned["artifacts"]["clean"]) / "clean.json")
    assert [r["changed"] for r in summary["rows"]] == [0, 4]


def test_sort_filter_bulk_and_export_identity_in_chromium(
    tmp_path: Path,
    browser: Any,  # noqa: F811
    downloads: Path,  # noqa: F811
) -> None:
    """Sort by vote share (both ways) and by method agreement; "Accept the open ones on this page" under a
    vote-share filter decides exactly the filtered cards of the page; the export records the run's store
    keys and overrides, and a class name that a spreadsheet would run as a formula is escaped."""
    from selenium.webdriver.common.by import By

    out = make_outputs(tmp_path)
    info = read_json(out["embed"] / "embed.json")
    # class names a spreadsheet would run as formulas: each begins with one of = + - @
    info["train_class_names"] = [
        '=HYPERLINK("http://example.com/x","click")',
        "+Trouser",
        "-Pullover",
        "@Dress",
    ]
    write_json(out["embed"] / "embed.json", info)
    keys = {"train": "a1b2c3", "embed": "d4e5f6", "influence": "0719aa", "relabel": "bb21cc"}
    overrides = ["noise=p10", "seed=3", "dataset.max_per_class=60"]
    page = tmp_path / "review.html"
    cfg = review.ReviewSettings("all", None, 64, 0)
    write_text(page, review.build("review", "sort", out, 0, loader, cfg, keys, overrides))
    data = _data(page.read_text())
    rows = {r["id"]: r for r in data["rows"]}
    order = [r["id"] for r in data["rows"]]  # review order
    browser.get(page.as_uri())

    # Sorting is stable: equal shares keep the review order.
    _select(browser, "f-sort", "vote share, highest first")
    assert _ids_shown(browser) == sorted(order, key=lambda i: -rows[i]["p"])[:50]
    _select(browser, "f-sort", "vote share, lowest first")
    assert _ids_shown(browser) == sorted(order, key=lambda i: rows[i]["p"])[:50]
    _select(browser, "f-sort", "method agreement, most methods first")
    assert _ids_shown(browser) == sorted(order, key=lambda i: -len(rows[i]["flags"]))[:50]
    _select(browser, "f-agree", "flagged by at least 2 of 2 methods")
    both = [i for i in order if len(rows[i]["flags"]) == 2]
    assert 0 < len(both) < len(order) and _ids_shown(browser)[:50] == both[:50]
    _select(browser, "f-agree", "any number of methods")

    # Bulk accept under the filter p >= 0.9, highest share first, pages of 20.
    _select(browser, "f-sort", "vote share, highest first")
    _select(browser, "f-share", "p ≥ 0.9")
    _select(browser, "f-size", "20")
    high = [i for i in sorted(order, key=lambda i: -rows[i]["p"]) if rows[i]["p"] >= 0.9]
    assert 20 < len(high) < len(order)
    assert _ids_shown(browser) == high[:20]
    browser.find_element(By.ID, "next").click()
    assert _ids_shown(browser) == high[20:40]
    browser.find_element(By.ID, "accept-page").click()
    decided = set(high[20:40])
    counts = browser.find_element(By.ID, "counts").text
    assert f"{len(rows)} suggestions: {len(decided)} accepted, 0 rejected" in counts
    # Nothing outside the filtered page was decided: the open ones are every other row.
    _select(browser, "f-share", "any p")
    _select(browser, "f-status", "reviewed")
    _select(browser, "f-size", "100")
    assert set(_ids_shown(browser)) == decided

    browser.find_element(By.ID, "export").click()
    csv = pd.read_csv(
        wait_for_file(downloads, "corrected_labels.csv"), dtype={"path": str}, keep_default_na=False
    )
    assert list(csv.columns) == list(review.CSV_COLUMNS)
    assert set(csv.id) == decided and set(csv.decision) == {"accept"}
    assert all(json.loads(k) == keys for k in csv.store_keys)
    assert all(json.loads(o) == overrides for o in csv.overrides)
    names = set(csv.old_label) | set(csv.new_label)
    expected = {data["classes"][rows[i]["label"]] for i in decided} | {
        data["classes"][rows[i]["suggested"]] for i in decided
    }
    assert names == {"'" + n for n in expected}  # shown as text by a spreadsheet, not run
    assert all(csvsafe.unescape_cell(n) in data["classes"] for n in names)
