"""Images of a self-contained HTML page: every image is an inline data URI, no external file, script or
font, so the page opens offline and survives being mailed or archived. The markup itself comes from
the templates of :mod:`eif.pages`."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from eif.pages import data_uri


def pil_png(img: Image.Image, size: int | None = None) -> bytes:
    """PNG bytes of ``img``, scaled so its longer side is ``size`` pixels (None: unchanged)."""
    img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
    if size is not None:
        w, h = img.size
        s = size / max(w, h)
        resample = Image.Resampling.NEAREST if s >= 2 else Image.Resampling.LANCZOS
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail(img: Image.Image, px: int) -> Image.Image:
    """A copy of ``img`` in mode L or RGB, shrunk (never enlarged) to at most ``px`` on its longer side."""
    small = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    small.thumbnail((px, px), Image.Resampling.LANCZOS)
    return small


def thumbnail_uri(img: Image.Image, px: int, quality: int = 80) -> str:
    """A small data URI of :func:`thumbnail` ``(img, px)``: grayscale as PNG, colour as JPEG of
    ``quality`` (a 64 px photo is about 2 KB)."""
    small = thumbnail(img, px)
    buf = io.BytesIO()
    if small.mode == "L":
        small.save(buf, format="PNG", optimize=True)
        return data_uri(buf.getvalue(), "image/png")
    small.save(buf, format="JPEG", quality=quality, optimize=True)
    return data_uri(buf.getvalue(), "image/jpeg")


@dataclass(frozen=True)
class Chart:
    """A PNG chart shown ``width`` pixels wide (None: its own size)."""

    uri: str
    alt: str
    width: int | None = None


def chart(png: bytes, alt: str, width: int | None = None) -> Chart:
    return Chart(data_uri(png), alt, width)


@dataclass(frozen=True)
class Figure:
    """A sample's image (``uri``; None where the data has no images, e.g. feature vectors: the
    ``title`` is shown in its place) of ``px`` pixels, captioned by ``lines`` of ``(css class,
    text)``; ``title`` is the tooltip (the sample's path). ``css``: the figure's class."""

    uri: str | None
    px: int
    lines: Sequence[tuple[str, str]]
    css: str = ""
    title: str = ""

    @property
    def alt(self) -> str:
        return " ".join(text for _, text in self.lines)

    @property
    def width(self) -> int:
        """Captions wrap at the image's width, at least 100 px."""
        return max(self.px + 4, 100)
