"""Building blocks of a self-contained HTML page: every image is an inline base64 data URI, no external
file, script or font, so the page opens offline and survives being mailed or archived."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import pandas as pd
from PIL import Image

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1240px;
color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:1.05em;margin:4px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
nav{font-size:.9em;margin:8px 0 16px}nav a{margin-right:12px}
.muted{color:#666}.grid{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:.76em;width:112px}
figure img{border:2px solid #ccc;image-rendering:pixelated;max-width:100%}
figure.harm img{border-color:#d55e00}figure.help img{border-color:#0072b2}
figure.query img{border-color:#000}
figcaption span{display:block;overflow-wrap:anywhere}
.cls{font-weight:600;font-size:1.1em}.ref{color:#666}.score{color:#333}
.flip{color:#fff;background:#d55e00;border-radius:3px;padding:0 3px;margin:1px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.label{font-weight:600;font-size:.85em;margin:8px 0 2px}
.row{display:flex;gap:8px 24px;align-items:flex-start;flex-wrap:wrap}
.pair{display:flex;gap:4px;border:1px dashed #bbb;border-radius:4px;padding:4px}
.votes{font-size:.85em}
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_data_uri(png: bytes) -> str:
    return data_uri(png, "image/png")


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


def img(png: bytes, alt: str, width: int | None = None, title: str = "") -> str:
    w = f' width="{width}"' if width else ""
    t = f' title="{esc(title)}"' if title else ""
    return f'<img src="{png_data_uri(png)}" alt="{esc(alt)}"{w}{t}>'


def sample_figure(
    png: bytes, width: int, lines: Sequence[tuple[str, str]], css_class: str = "", title: str = ""
) -> str:
    """An image (``width``: its longer side in pixels) captioned by ``lines`` of ``(css class, text)``;
    ``title`` is its tooltip (the path). Captions wrap at the image's width, at least 100 px."""
    cls = f' class="{css_class}"' if css_class else ""
    alt = " ".join(text for _, text in lines)
    caption = "".join(f'<span class="{c}">{esc(t)}</span>' for c, t in lines)
    return (
        f'<figure{cls} style="width:{max(width + 4, 100)}px">{img(png, alt, title=title)}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def table(frame: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    """An HTML table; floats formatted with ``floatfmt``, NaN shown as an empty cell."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "" if v != v else floatfmt.format(v)
        return esc(v)

    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower())


def section(title: str, body: str) -> str:
    return f'<section id="{anchor(title)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, sections: Sequence[str], subtitle: str = "", nav: Sequence[str] = ()) -> str:
    """The whole document; ``nav``: section titles to link at the top."""
    sub = f'<p class="muted">{esc(subtitle)}</p>' if subtitle else ""
    links = "".join(f'<a href="#{anchor(t)}">{esc(t)}</a>' for t in nav)
    menu = f"<nav>{links}</nav>" if links else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}{menu}{''.join(sections)}</body></html>\n"
    )
