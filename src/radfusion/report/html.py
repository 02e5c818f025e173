"""Small HTML building blocks for the self-contained report: escaped tables, embedded PNGs.

No template engine and no JavaScript: every fragment is built from escaped strings, images are
``data:image/png;base64`` URIs, and the stylesheet is inline, so the file opens offline and
never fetches anything.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

import pandas as pd
from PIL import Image

__all__ = [
    "CSS",
    "PRINT_PAGE_SIZES",
    "compact_png",
    "data_uri",
    "details",
    "esc",
    "figure",
    "figure_row",
    "frame_table",
    "page",
    "section",
]

CSS = """
:root { --ink: #1d1d1f; --muted: #5b6270; --line: #d9dde3; --accent: #1f5fa8;
        --warn-bg: #fff6e0; --warn-line: #e0a800; --ok: #1b7f3b; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #f4f5f7;
       font: 15px/1.5 "Segoe UI", "Helvetica Neue", Helvetica, Arial, "Liberation Sans",
       "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
h3 { font-size: 17px; margin: 22px 0 6px; }
p, li { max-width: 80em; }
.meta { color: var(--muted); font-size: 13px; margin: 0 0 14px; }
nav { background: #f7f8fa; border: 1px solid var(--line); border-radius: 6px;
      padding: 8px 14px; font-size: 14px; columns: 2; }
nav a { color: var(--accent); text-decoration: none; display: block; }
.box { border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px; margin: 12px 0; }
.key { background: #eef4fb; border-color: #b9cfe8; }
.caveats { background: var(--warn-bg); border-color: var(--warn-line); }
.caveats h2 { border: 0; margin-top: 4px; padding: 0; font-size: 18px; }
.caveats li { margin: 3px 0; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px;
          font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
         vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.group td { font-weight: 600; background: #fafbfc; }
td.indent { padding-left: 26px; }
td.sig { font-weight: 700; color: var(--bad); }
.tablewrap { overflow-x: auto; }
table.compact { font-size: 12px; }
table.compact td, table.compact th { padding: 3px 6px; white-space: nowrap; }
.note { color: var(--muted); font-size: 12.5px; margin: 2px 0 14px; }
.methods th { width: 210px; background: #f7f8fa; }
.methods td, .methods th { font-size: 14px; padding: 6px 10px; }
.methods td > p:first-child { margin-top: 0; }
.methods td > p:last-child { margin-bottom: 0; }
td.best { font-weight: 700; }
.case table { font-size: 12.5px; width: 100%; }
.case td, .case th { padding: 3px 6px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; border: 1px solid #eceef1; background: #fff; }
figcaption { font-size: 12.5px; color: var(--muted); margin: 4px 2px 0; }
.row { display: grid; gap: 14px; margin: 10px 0 18px; align-items: start; }
.row.c1 { grid-template-columns: 1fr; }
.row.c2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
.row.c3 { grid-template-columns: repeat(3, minmax(0, 1fr)); }
.row.c4 { grid-template-columns: repeat(4, minmax(0, 1fr)); }
.row.wide figure { max-width: 1100px; }
.row.mid figure { max-width: 860px; }
.cases { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 16px; }
.case { border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
.case img { width: 100%; height: auto; image-rendering: auto; }
.case h4 { margin: 0 0 4px; font-size: 15px; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); font-weight: 600; }
pre { background: #f7f8fa; border: 1px solid var(--line); padding: 10px; font-size: 12px;
      overflow-x: auto; white-space: pre; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media (max-width: 900px) { .row.c3, .row.c4 { grid-template-columns: 1fr 1fr; }
  nav { columns: 1; } }
.synthetic { background: #fde8e6; border-color: var(--bad); color: var(--bad); }
.flow { display: flex; flex-direction: column; align-items: center; gap: 2px; margin: 8px 0; }
.frow { display: flex; gap: 12px; justify-content: center; flex-wrap: wrap; }
.fbox { border: 1.5px solid var(--accent); border-radius: 6px; padding: 6px 12px;
        text-align: center; font-size: 13px; min-width: 150px; background: #fff; }
.fexcl { border-color: var(--warn-line); background: var(--warn-bg); }
.fnote { color: var(--muted); font-size: 11.5px; max-width: 260px; }
.farrow { color: var(--muted); font-size: 18px; line-height: 1; }
table.checklist td:first-child { white-space: nowrap; }
.status-filled { color: var(--ok); font-weight: 600; }
.status-partly { color: #8a6d00; font-weight: 600; }
.status-author { color: var(--bad); font-weight: 600; }
/* Print / PDF (Chromium "print to PDF", radfusion report --pdf): A4 by default (see
   PRINT_PAGE_SIZES for Letter), no scrollbars (tables wrap and shrink to the page instead),
   collapsed supplements printed open, and no break inside a figure, table, or a heading and
   the block that follows it. */
@page { size: A4; margin: 14mm 12mm 16mm; }
@media print {
  body { background: #fff; font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  .tablewrap, pre { overflow: visible !important; }
  table { width: 100%; table-layout: auto; font-size: 8.5pt; }
  table.compact, table.table2, table.checklist { font-size: 7.5pt; }
  th, td, td.num, th.num, table.compact td, table.compact th { white-space: normal;
    overflow-wrap: break-word; padding: 2px 4px; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 7.5pt; }
  h1, h2, h3, h4, caption, summary { break-after: avoid; page-break-after: avoid; }
  h2 + *, h3 + *, h4 + * { break-before: avoid; page-break-before: avoid; }
  h2 + .note, h3 + .note, h2 + p, h3 + p { break-after: avoid; page-break-after: avoid; }
  /* Long sections that open with a long table start a page (no heading left at a page foot). */
  section#methods, section#supplement, section#checklists { break-before: page; }
  figure, .case, .box, .fbox, .flow, tr, img { break-inside: avoid; page-break-inside: avoid; }
  /* The caveats list may run long: it flows on from page 1 (held whole, it left page 1
     nearly empty), keeping each caveat whole. */
  .box.caveats { break-inside: auto; page-break-inside: auto; }
  .caveats li { break-inside: avoid; page-break-inside: avoid; }
  .row { display: block; }
  .row figure { display: inline-block; vertical-align: top; width: 49%; margin-bottom: 6px; }
  .row.c1 figure { display: block; width: 100%; max-width: 100%; }
  .row.c3 figure, .row.c4 figure { width: 49%; }
  figure img { max-height: 230mm; object-fit: contain; }
  .cases { display: block; }
  .case { display: inline-block; width: 49%; vertical-align: top; margin-bottom: 6px; }
  details > summary { list-style: none; font-size: 12pt; color: var(--ink); }
  details::details-content { content-visibility: visible; display: contents; }
  a { color: inherit; text-decoration: none; }
}
"""

#: ``@page`` sizes for the PDF; the stylesheet's default is A4.
PRINT_PAGE_SIZES = ("A4", "Letter")


def esc(text: object) -> str:
    """HTML-escape any value's ``str`` (quotes too)."""
    return escape(str(text), quote=True)


def compact_png(data: bytes, max_width: int = 1200) -> bytes:
    """Re-encode a PNG smaller for embedding: at most ``max_width`` wide, 256-colour palette.

    Plots have few colours, so a 256-colour adaptive palette is visually lossless and
    several times smaller; photographs (ultrasound) keep their grey levels within 256 too.

    Parameters
    ----------
    data : bytes
        PNG (or any Pillow-readable) image.
    max_width : int, default 1200

    Returns
    -------
    bytes
        PNG bytes.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgb = im.convert("RGB")
    if rgb.width > max_width:
        h = max(1, round(rgb.height * max_width / rgb.width))
        rgb = rgb.resize((max_width, h), Image.Resampling.LANCZOS)
    pal = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes | Path, caption: str, alt: str | None = None, max_width: int = 1200) -> str:
    """An embedded figure with caption (PNG bytes or a file path)."""
    raw = png.read_bytes() if isinstance(png, Path) else png
    src = data_uri(compact_png(raw, max_width))
    return (
        f'<figure><img src="{src}" alt="{esc(alt or caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def figure_row(items: Sequence[str], columns: int | None = None, extra: str = "") -> str:
    """Figures side by side in a CSS grid (1-4 columns)."""
    if not items:
        return ""
    n = min(4, columns or len(items))
    return f'<div class="row c{n} {extra}">' + "".join(items) + "</div>"


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return esc(value)


_NUMERIC = re.compile(r"^[<>≤≥–-]?\d+(\.\d+)?%?( ± \d+(\.\d+)?)?( \(.*\))?$")


def _is_num(value: object) -> bool:
    # Numbers, "0.905 (0.864–0.941)", "40 (66.7)", "<0.001": right-aligned; names are not.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True
    return bool(_NUMERIC.match(str(value).strip()))


def frame_table(
    df: pd.DataFrame,
    caption: str | None = None,
    note: str | None = None,
    group_col: str | None = None,
    indent_rows: Iterable[int] = (),
    bold_cells: Iterable[tuple[int, str]] = (),
    bold_class: str = "sig",
    float_digits: int = 3,
    css_class: str = "",
) -> str:
    """Render a DataFrame as an escaped HTML table.

    Parameters
    ----------
    df : pandas.DataFrame
        Shown as is (index dropped); floats formatted with ``float_digits``.
    caption : str, optional
    note : str, optional
        Small print under the table.
    group_col : str, optional
        Consecutive equal values of this column become a group header row (Table 2 layout)
        and the column is dropped.
    indent_rows : iterable of int
        Row positions whose first cell is indented (Table 1 levels under their variable).
    bold_cells : iterable of (row position, column)
        Cells emphasised (e.g. significant p-values).
    bold_class : str, default "sig"
        CSS class of emphasised cells: "sig" (bold red, P < 0.05) or "best" (bold).
    float_digits : int, default 3
    css_class : str

    Returns
    -------
    str
    """
    bold = set(bold_cells)
    indent = set(indent_rows)
    cols = [c for c in df.columns if c != group_col]
    # Right-align a column only when all its values are numbers (versions like "3.11.9" stay
    # left, and so does a column mixing names and numbers).
    numeric_cols = {
        c
        for c in cols
        if all(_is_num(v) for v in df[c] if str(v).strip() and str(v) not in ("NA", "—", "nan"))
    }
    head = "".join(
        f'<th class="num">{esc(c)}</th>' if c in numeric_cols else f"<th>{esc(c)}</th>"
        for c in cols
    )
    body = []
    current = object()
    for pos, (_, row) in enumerate(df.iterrows()):
        if group_col is not None and row[group_col] != current:
            current = row[group_col]
            body.append(f'<tr class="group"><td colspan="{len(cols)}">{esc(current)}</td></tr>')
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and not math.isnan(v):
                v = f"{v:.{float_digits}f}"
            classes = []
            if c in numeric_cols:
                classes.append("num")
            if (pos, c) in bold:
                classes.append(bold_class)
            if c == cols[0] and pos in indent:
                classes.append("indent")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{_cell(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    foot = f'<p class="note">{esc(note)}</p>' if note else ""
    return (
        f'<div class="tablewrap"><table class="{esc(css_class)}">{cap}<thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>{foot}"
    )


def details(summary: str, inner: str) -> str:
    """A collapsed block (``<details>``, no JavaScript needed)."""
    return f"<details><summary>{esc(summary)}</summary>{inner}</details>"


def section(anchor: str, title: str, inner: str) -> str:
    """An ``<h2>`` section with an id for the table of contents."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{inner}</section>'


def page(title: str, body: str, paper: str = "A4") -> str:
    """The whole HTML document with the inline stylesheet (``paper``: its ``@page`` size)."""
    if paper not in PRINT_PAGE_SIZES:
        raise ValueError(f"paper must be one of {PRINT_PAGE_SIZES}, not {paper!r}")
    css = CSS.replace("size: A4;", f"size: {paper};")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{css}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
