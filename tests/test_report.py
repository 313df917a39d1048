"""The per-run HTML report: built from small synthetic stage outputs, self-contained, and rendered
in headless Chromium with every image loaded (skipped when chromium is not installed)."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eif.influence.artifacts import write_index
from eif.mislabel import knn
from eif.report import figures, run_report
from eif.stages.report import artifact_name, overrides
from eif.tables.format import markdown, write_table
from eif.utils import csvsafe
from eif.utils.io import read_json, write_json, write_text
from tests.report_outputs import (
    CFG,
    PAIRS,
    TEST_CLASSES,
    TRAIN_CLASSES,
    class_of_test,
    loader,
    make_outputs,
)

ROOT = Path(__file__).resolve().parents[1]


def _page(tmp_path: Path) -> Path:
    page = run_report.build("synthetic run", "test", make_outputs(tmp_path), CFG, 0, loader, loader)
    path = tmp_path / "report.html"
    write_text(path, page)
    return path


def test_report_is_self_contained(tmp_path: Path) -> None:
    text = _page(tmp_path).read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    # pairs 2 x (2 test + 2 methods x 10) + group (6 test + 2 methods x 10) + curves + 4 relabel cards
    # x (1 + 6 neighbours + 2 x 3 examples) + Table 5 bars + Table 1 chart
    assert len(srcs) == 44 + 26 + 1 + 4 * 13 + 2
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for heading in (
        "Model metrics",
        "Fig. 3",
        "Group 1: Shirt confused with Sandal, Ankle boot",
        "Fig. 2",
        "Algorithm 1",
        "Table 5",
        "Table 1",
        "Table 3",
    ):
        assert heading in text
    assert "strict" in text and "2nd label" in text
    assert '<a href="#group-1--shirt-confused-with-sandal--ankle-boot">' in text  # navigation


def _section(text: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert m is not None, f"no section {anchor}"
    return m.group(1)


def _captions(html_text: str) -> list[list[str]]:
    """The caption lines of every figure, in order."""
    return [
        re.findall(r"<span[^>]*>(.*?)</span>", c)
        for c in re.findall(r"<figcaption>(.*?)</figcaption>", html_text)
    ]


def class_of_tests_on_every_image(tmp_path: Path) -> None:
    """Every image is captioned with a class name first (training: the label training saw; test: the
    test class), then its id; no label is ever shown as a number."""
    out = make_outputs(tmp_path)
    text = run_report.build("synthetic run", "test", out, CFG, 0, loader, loader)
    names = {html.escape(n) for n in TRAIN_CLASSES + TEST_CLASSES}
    captions = _captions(text)
    assert len(captions) == 44 + 26 + 4 * 13
    for lines in captions:
        assert lines[0] in names, lines
        assert any(re.fullmatch(r"(train|test|1-NN) #\d+", line) for line in lines), lines
    assert not re.search(r"class \d|y=\d|label \d", text)


def test_paths_find_each_sample(tmp_path: Path) -> None:
    """With image files, each caption and tooltip gives the path relative to the data set root."""
    out = make_outputs(tmp_path, paths=True)
    text = run_report.build("synthetic run", "test", out, CFG, 0, loader, loader)
    info = read_json(out["embed"] / "embed.json")
    for i in (int(PAIRS[0][0]), int(PAIRS[0][1])):
        path = info["paths"]["test"][i]
        assert f'title="{path}"' in text and f'<span class="ref">{path}</span>' in text
    train_refs = re.findall(
        r'title="([^"]+)"><figcaption><span class="cls">[^<]*</span>(?:<span class="flip">'
        r'[^<]*</span>)?<span class="ref">train #(\d+)</span>',
        text,
    )
    assert train_refs and all(info["paths"]["train"][int(i)] == p for p, i in train_refs)


def test_confusion_pairs_section(tmp_path: Path) -> None:
    """Fig. 3: report.pairs pairs, each with its 2 test images and top-5 harmful + helpful per method,
    captioned with class, flip mark, id, score and rank."""
    out = make_outputs(tmp_path)
    text = run_report.build("synthetic run", "test", out, CFG, 0, loader, loader)
    sec = _section(text, "top-confusion-pairs--fig--3-")
    cards = sec.split('<div class="card">')[1:]
    assert len(cards) == CFG["pairs"]
    for k, card in enumerate(cards):
        assert len(re.findall(r"<img ", card)) == 2 + 2 * (5 + 5)
        a, b = PAIRS[k]
        ca, cb = class_of_test(a), class_of_test(b)
        assert (
            f"Pair {k + 1}: {ca} (test #{a}), whose nearest test neighbour is labelled {cb} (test #{b})"
            in card
        )
        assert f"d = {0.1 * (k + 1):.4f}" in card
        for m in ("EIF", "IF"):
            assert f"{m}: most harmful" in card and f"{m}: most helpful" in card
        assert card.count('class="harm"') == 10 and card.count('class="help"') == 10
    # The flipped sample with score 10 leads every harmful list, marked with its true class.
    with np.load(out["embed"] / "train.npz") as z:
        f = int(z["flipped"][0])
        y, c = int(z["labels"][f]), int(z["clean_labels"][f])
    for m in ("EIF", "IF"):
        first = re.search(rf">{m}: most harmful.*?<figcaption>(.*?)</figcaption>", cards[0], re.S)
        assert first is not None
        assert re.findall(r"<span[^>]*>(.*?)</span>", first.group(1)) == [
            html.escape(TRAIN_CLASSES[y]),
            html.escape(f"flipped (true: {TRAIN_CLASSES[c]})"),
            f"train #{f}",
            f"{m} +10 · harmful #1",
        ]
    # Without pair scores the section is left out, the rest stays.
    index = read_json(out["influence"] / "influence.json")
    write_index(
        out["influence"], [e for e in index["analyses"] if e["kind"] != "pair"], n_train=200, methods={}
    )
    text = run_report.build("synthetic run", "test", out, CFG, 0, loader, loader)
    assert "Fig. 3" not in text and "Group 1: Shirt confused with" in text


def test_group_section_named_by_classes(tmp_path: Path) -> None:
    text = run_report.build("synthetic run", "test", make_outputs(tmp_path), CFG, 0, loader, loader)
    sec = _section(text, "group-1--shirt-confused-with-sandal--ankle-boot")
    assert "3 Shirt test images whose nearest test neighbour is labelled Sandal or Ankle boot" in sec
    assert "The detect and relabel stages rank the training set by this group." in sec
    assert sec.count('class="pair"') == 3
    for m in ("EIF", "IF"):
        assert f"{m}: most harmful" in sec and f"{m}: most helpful" in sec


def test_relabel_cards(tmp_path: Path) -> None:
    """Each card: the query (current and suggested class, probability, flip mark), its nearest
    voting neighbours with Algorithm 1's weights, and the nearest examples of both classes."""
    out = make_outputs(tmp_path)
    text = run_report.build("synthetic run", "test", out, CFG, 0, loader, loader)
    sec = _section(text, "relabel-suggestions--algorithm-1--fig--5-")
    review = pd.read_csv(out["relabel"] / "review.csv")
    first = review[review.changes_label].head(CFG["suggestions"])
    cards = re.findall(r'<div class="card" data-id="(\d+)">(.*?)(?=<div class="card"|$)', sec, re.S)
    assert [int(i) for i, _ in cards] == first.sample_id.tolist()
    with np.load(out["embed"] / "train.npz") as z:
        emb, labels, clean, flipped = (
            z["embeddings"],
            z["labels"],
            z["clean_labels"],
            set(z["flipped"].tolist()),
        )
    k = read_json(out["relabel"] / "relabel.json")["k"]
    for (i, card), row in zip(cards, first.itertuples(index=False)):
        i = int(i)
        cur, sug = TRAIN_CLASSES[row.current_label], TRAIN_CLASSES[row.recommended_label]
        query = _captions(card)[0]
        assert (
            query[0] == html.escape(cur)
            and f"suggested: {html.escape(sug)} (p = {row.probability:.2f})" in query
        )
        assert (html.escape(f"flipped (true: {TRAIN_CLASSES[clean[i]]})") in query) == (i in flipped)
        nbrs = knn.train_neighbours(emb, k, np.array([i]))
        shares = run_report.neighbour_shares(nbrs)[0]
        assert np.isclose(shares.sum(), 1.0) and np.all(np.diff(shares) <= 1e-12)
        shown = re.findall(r'<figure class="nbr".*?</figure>', card, re.S)
        assert len(shown) == CFG["neighbours"]
        for r, (fig, j) in enumerate(zip(shown, nbrs.indices[0]), start=1):
            lines = _captions(fig)[0]
            assert lines[0] == html.escape(TRAIN_CLASSES[labels[j]]) and f"train #{j}" in lines
            assert f"neighbour {r}: weight {shares[r - 1]:.1%}" in lines
            assert (html.escape(f"flipped (true: {TRAIN_CLASSES[clean[j]]})") in lines) == (j in flipped)
        for role, c in (("current", row.current_label), ("suggested", row.recommended_label)):
            block = re.search(rf'<div class="{role}">(.*?)</div></div>', card, re.S)
            assert block is not None and f"{html.escape(TRAIN_CLASSES[c])} ({role} class)" in block.group(1)
            ex = [int(x) for x in re.findall(r'<span class="ref">train #(\d+)</span>', block.group(1))]
            assert len(ex) == CFG["class_examples"] and all(labels[j] == c for j in ex)
            assert not {i, *nbrs.indices[0, : CFG["neighbours"]].tolist()} & set(ex)
            d = np.linalg.norm(emb[ex] - emb[i], axis=1)
            assert np.all(np.diff(d) >= 0)  # nearest first
    assert "flipped (true:" in sec


def test_table1_rows(tmp_path: Path) -> None:
    sec = _section(run_report.build("r", "", make_outputs(tmp_path), CFG, 0), "tables")
    assert "Table 1 (this run)" in sec and "<td>1.23E-02</td><td>4.56E-02</td><td>ok</td>" in sec
    assert "<td></td><td></td><td>not enough</td>" in sec  # no improvement / p-value: empty cells
    assert 'alt="Table 1 chart"' in sec


def test_report_artifact_is_named_per_run() -> None:
    """Sweep job dirs repeat (0, 1, ...) from sweep to sweep: the parent dir keeps the names apart."""
    name = artifact_name(Path("/o/sweeps/2026-12-01/17-00-00_12/0"))
    assert name == "report-17-00-00_12-0"
    assert artifact_name(Path("/o/runs/2026-12-01/17-00-00_12")) == "report-2026-12-01-17-00-00_12"
    assert artifact_name(Path("/o/x/a=b c")) == "report-x-a_b_c"


def test_okabe_ito_styles() -> None:
    """One colour per ranking family (dashed for its second member), all from the Okabe-Ito palette."""
    names = ["eif", "eif_abs", "if", "if_abs", "random", "loss", "cleanlab_quality", "cleanlab_issues"]
    st = figures.ranking_styles(names)
    assert st["eif"]["color"] == st["eif_abs"]["color"] != st["if"]["color"]
    assert (st["eif"]["ls"], st["eif_abs"]["ls"], st["cleanlab_issues"]["ls"]) == ("-", "--", "--")
    assert st["cleanlab_quality"]["color"] == st["cleanlab_issues"]["color"]
    assert len({st[n]["color"] for n in ("eif", "if", "loss", "cleanlab_quality")}) == 4
    assert all(st[n]["color"] in figures.OKABE_ITO for n in names if n != "random")


def test_markdown_table() -> None:
    """GitHub markdown through tabulate: cells as formatted (no re-parsing of numbers), ``|`` escaped,
    NaN empty, column padding aside."""
    md = markdown(pd.DataFrame({"a": ["x|y", "007"], "b": [0.5, 1e-7], "c": [float("nan"), 2.0]}))
    lines = [re.sub(r" +", " ", line) for line in md.splitlines()]
    assert lines[0] == "| a | b | c |" and re.fullmatch(r"\|-+\|-+\|-+\|", lines[1])
    assert lines[2:] == ["| x\\|y | 0.5000 | |", "| 007 | 0.0000 | 2.0000 |"]


def _screenshot_module():
    spec = importlib.util.spec_from_file_location(
        "screenshot_report", ROOT / "scripts" / "screenshot_report.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["screenshot_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    shot = _screenshot_module()
    keep = Path(os.environ.get("EIF_REPORT_SCREENSHOT", tmp_path / "report.png"))
    if shot.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    result = shot.check(_page(tmp_path), keep)
    assert result["images"] >= 70 and result["broken"] == 0
    assert result["height"] > 1000  # longer than one screen
    png = Image.open(keep)
    assert png.size[0] == 1280 and png.size[1] > 1000
    assert len(np.unique(np.asarray(png.convert("L")))) > 20  # drew images, not a blank page


def test_markup_in_names_is_shown_as_text(tmp_path: Path) -> None:
    """Class names and paths come from the user's data: the templates escape them everywhere (captions,
    headings, tooltips, navigation), so no name can add an element or an attribute."""
    out = make_outputs(tmp_path, paths=True)
    info = read_json(out["embed"] / "embed.json")
    evil = '<img src=x onerror="alert(1)">'
    info["train_class_names"][1] = evil
    info["test_class_names"][1] = "Shirt</h2><script>alert(2)</script>"
    info["paths"]["train"] = [f'a"b/{i}.png' for i in range(len(info["paths"]["train"]))]
    write_json(out["embed"] / "embed.json", info)
    text = run_report.build("<title>", "", out, CFG, 0, loader, loader)
    assert evil not in text and "<script" not in text and 'a"b/' not in text
    assert '<span class="cls">&lt;img src=x onerror=&#34;alert(1)&#34;&gt;</span>' in text  # shown as text
    assert "Shirt&lt;/h2&gt;&lt;script&gt;" in text
    assert "<title>&lt;title&gt;</title>" in text
    # The only elements are the report's own.
    tags = set(re.findall(r"<([a-z0-9]+)[\s>]", text))
    assert tags <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "nav", "a", "section", "p",
        "div", "table", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption", "span",
    }  # fmt: skip
    assert len(re.findall(r"<img ", text)) == len(re.findall(r'<img src="data:image/png;base64,', text))


def test_csv_cells_cannot_be_formulas(tmp_path: Path) -> None:
    """OWASP's CSV-injection rule on every table eif writes through ``write_table``: text cells (and column
    names) that begin with = + - @, a tab or a carriage return get a leading ', numbers stay numbers."""
    frame = pd.DataFrame(
        {
            "class": ['=HYPERLINK("http://x","y")', "+1+2", "-cmd", "@SUM(A1)", "\tTab", "ok", "-0.5"],
            "value": [1.0, -2.5, 0.0, 3.0, 4.0, 5.0, 6.0],
            "=col": ["a"] * 7,
        }
    )
    csv, _ = write_table(frame, tmp_path, "t")
    back = pd.read_csv(csv, keep_default_na=False, dtype={"class": str})
    assert list(back.columns) == ["class", "value", "'=col"]
    assert back["class"].tolist() == [
        '\'=HYPERLINK("http://x","y")',
        "'+1+2",
        "'-cmd",
        "'@SUM(A1)",
        "'\tTab",
        "ok",
        "-0.5",
    ]
    assert back["value"].tolist() == frame["value"].tolist()
    assert [csvsafe.unescape_cell(c) for c in back["class"]] == frame["class"].tolist()
    assert csvsafe.escape_cell(-1) == -1 and csvsafe.unescape_cell("'x") == "'x"


def test_review_export_names_the_runs_overrides(tmp_path: Path) -> None:
    """The overrides the review page's export records: Hydra's ``.hydra/overrides.yaml`` of the run dir,
    none without it (a run from the Python API)."""
    assert overrides(tmp_path) == []
    write_text(tmp_path / ".hydra" / "overrides.yaml", "- noise=p10\n- dataset.max_per_class=60\n- seed=1\n")
    assert overrides(tmp_path) == ["noise=p10", "dataset.max_per_class=60", "seed=1"]
