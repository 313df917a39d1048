"""Building blocks of a self-contained HTML page: every image is an inline base64 PNG, no external
file, script or font, so the page opens offline and survives being mailed or archived."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.muted{color:#777}.grid{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:.78em;max-width:160px}
figure img{border:1px solid #ccc;image-rendering:pixelated}figcaption{white-space:pre-line}
.harm figcaption{color:#b00}.help figcaption{color:#070}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.label{font-weight:600;font-size:.85em;margin:6px 0 2px}
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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


def img(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{png_data_uri(png)}" alt="{esc(alt)}"{w}>'


def img_file(path: Path, alt: str, width: int | None = None) -> str:
    return img(Path(path).read_bytes(), alt, width)


def figure(png: bytes, caption: str, css_class: str = "", width: int | None = None) -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f"<figure{cls}>{img(png, caption, width)}<figcaption>{esc(caption)}</figcaption></figure>"


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


def section(title: str, body: str) -> str:
    anchor = "".join(ch if ch.isalnum() else "-" for ch in title.lower())
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, sections: Sequence[str], subtitle: str = "") -> str:
    sub = f'<p class="muted">{esc(subtitle)}</p>' if subtitle else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}{''.join(sections)}</body></html>\n"
    )
