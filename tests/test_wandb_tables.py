"""W&B tables with images: a column of PIL images is logged as ``wandb.Image`` cells. The offline run
(``<run dir>/wandb/wandb/offline-run-*``) records the table under its key, and W&B stages the table
(a ``run_table`` artifact: JSON with ``image-file`` cells plus the image files) for ``wandb sync``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eif.config import LoggerConfig

WANDB_VARS = (
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_DATA_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_ARTIFACT_DIR",
)


def offline_run(run_dir: Path) -> Path:
    """The one offline W&B run of a job's ``run_dir``."""
    runs = list((run_dir / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def logged_keys(run_dir: Path) -> list[str]:
    """The key of every table and image logged by the offline run (``<key>_<step>_<hash>.<ext>``)."""
    media = offline_run(run_dir) / "files" / "media"
    return sorted(
        "/".join(f.relative_to(media).parts[1:]).rsplit("_", 2)[0] for f in media.rglob("*") if f.is_file()
    )


def staged_tables(run_dir: Path, columns: list[str]) -> list[tuple[dict, dict[str, Path]]]:
    """The tables having ``columns`` that the offline run staged for upload, each with the staged files
    by SHA-256. W&B logs a table as a ``run_table`` artifact: its JSON with ``image-file`` cells and the
    image files, staged under ``<run dir>/wandb/data/artifacts/staging`` until ``wandb sync``."""
    files = [f for f in (run_dir / "wandb" / "data" / "artifacts" / "staging").rglob("*") if f.is_file()]
    by_sha = {hashlib.sha256(f.read_bytes()).hexdigest(): f for f in files}
    tables = []
    for f in files:
        try:
            doc = json.loads(f.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and doc.get("_type") == "table" and set(columns) <= set(doc["columns"]):
            tables.append((doc, by_sha))
    return tables


def image_cells(table: dict, by_sha: dict[str, Path], column: str) -> list[Image.Image]:
    """The images of ``column``: every cell is an image file staged with the table."""
    j = table["columns"].index(column)
    out = []
    for row in table["data"]:
        cell = row[j]
        assert isinstance(cell, dict) and cell["_type"] == "image-file", cell
        out.append(Image.open(by_sha[cell["sha256"]]))
    return out


def test_offline_run_tables_hold_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eif.logging.run_logger import WandbLogger

    for var in WANDB_VARS:  # the logger sets them; restored afterwards
        monkeypatch.setenv(var, os.environ.get(var, ""))
    cfg = LoggerConfig(
        mode="offline", project="eif-test", group="fashion_mnist-proxynca_pp-p10", name="t-seed0"
    )
    logger = WandbLogger(cfg, {"seed": 0}, tmp_path)
    assert logger.active
    frame = pd.DataFrame(
        {
            "sample_id": [3, 7],
            "thumbnail": [Image.new("L", (28, 28), 90), Image.new("RGB", (64, 40), (200, 10, 10))],
            "current_class": ["Sandal", "Ankle boot"],
            "score": [0.5, -0.25],
        }
    )
    logger.table("relabel/review", frame)
    logger.finish()
    assert logged_keys(tmp_path) == ["relabel/review"]
    tables = staged_tables(tmp_path, list(frame.columns))
    assert len(tables) >= 1 and tables[0][0]["columns"] == list(frame.columns)
    table, by_sha = tables[0]
    assert [r[2] for r in table["data"]] == ["Sandal", "Ankle boot"]
    images = image_cells(table, by_sha, "thumbnail")
    assert [im.size for im in images] == [(28, 28), (64, 40)]
    assert [im.getpixel((0, 0)) for im in images] == [90, (200, 10, 10)]
