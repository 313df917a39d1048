"""Headless Chromium driven by Selenium, for the tests of the report and the review page.

Uses Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``apt-get install -y chromium
chromium-driver``) with a fresh profile; tests skip with the reason when either is missing."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _binaries() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None)
        pytest.skip(f"{missing} not installed (apt-get install -y chromium chromium-driver)")
    return chromium, driver


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """The folder the browser downloads into."""
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def browser(tmp_path: Path, downloads: Path) -> Iterator[Any]:
    """A Selenium Chrome driver on headless Chromium, downloading into ``downloads`` without asking."""
    chromium, driver = _binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
        },
    )
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def images_state(drv: Any) -> dict[str, int]:
    """Counts of ``<img>`` elements on the loaded page and of the ones that failed to decode."""
    return drv.execute_script(
        "const imgs = Array.from(document.images);"
        "return {images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length};"
    )


def wait_for_file(folder: Path, name: str, timeout: float = 20.0) -> Path:
    """``folder/name`` once the browser has finished writing it."""
    path = folder / name
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and not any(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(
        f"{name} was not downloaded into {folder} within {timeout} s: {list(folder.iterdir())}"
    )
