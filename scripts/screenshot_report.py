"""Render a report.html in headless Chromium: check every image loaded, save a full-page screenshot.

    python scripts/screenshot_report.py RUN_DIR/report.html report.png

Chromium (Debian: ``apt-get install -y chromium``) loads a copy of the page with a small script
added that records, after the load event, the number of images and of broken ones
(``!(img.complete && img.naturalWidth > 0)``) and the page height; ``--dump-dom`` prints them.
Prints one JSON line: {"images", "broken", "height", "screenshot"}; exits 1 on broken images.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const b = document.body;
  b.dataset.images = imgs.length;
  b.dataset.broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  b.dataset.height = document.documentElement.scrollHeight;
});</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def _run(chromium: str, args: list[str], profile: Path, timeout: float) -> str:
    proc = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def check(
    report: Path, screenshot: Path, width: int = 1280, max_height: int = 12000, timeout: float = 120.0
) -> dict:
    """Load ``report`` in headless Chromium; returns image counts, page height and the screenshot path."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="eif-shot-") as tmp:
        tmp = Path(tmp)
        probe = tmp / "probe.html"
        probe.write_text(report.read_text().replace("</body>", PROBE + "</body>", 1))
        # Measure at the screenshot's width: in the default 800 px window text wraps more and the page is
        # taller, which left a blank band under the screenshot.
        dom = _run(
            chromium, [f"--window-size={width},600", "--dump-dom", probe.as_uri()], tmp / "profile1", timeout
        )
        found = {k: int(v) for k, v in re.findall(r'data-(images|broken|height)="(\d+)"', dom)}
        if len(found) != 3:
            raise RuntimeError("the page's load event never fired in chromium")
        height = min(max(found["height"], 600), max_height)
        _run(
            chromium,
            [
                f"--window-size={width},{height}",
                f"--screenshot={screenshot.resolve()}",
                report.resolve().as_uri(),
            ],
            tmp / "profile2",
            timeout,
        )
    return {**found, "screenshot": str(screenshot)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("screenshot", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    a = ap.parse_args()
    result = check(a.report, a.screenshot, a.width)
    print(json.dumps(result))
    sys.exit(1 if result["broken"] else 0)


if __name__ == "__main__":
    main()
