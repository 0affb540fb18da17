"""The page around the report's sections: CSS (screen and print), number formats, HTML helpers.

One self-contained file: styles inline, figures as data URIs, no script, no web font, nothing
fetched. Print: A4 landscape, tables and figures never split across pages, wide tables shrink
instead of scrolling.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

CSS = """
:root { --mllm: #b8322a; --detector: #1f5fa8; --muted: #5f6368; --rule: #e3e3e3; --band: #f6f7f9; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: #eef0f3; color: #1d1f23;
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 28px 28px 56px; background: #fff; }
header h1 { font-size: 24px; margin: 0 0 4px; letter-spacing: -0.01em; }
header .meta { color: var(--muted); font-size: 12.5px; }
nav { margin: 16px 0 8px; padding: 10px 14px; background: var(--band); border-radius: 6px; font-size: 13px; }
nav a { color: #1d1f23; text-decoration: none; margin-right: 14px; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
section { margin-top: 30px; }
h2 { font-size: 18px; margin: 0 0 4px; padding-top: 6px; border-top: 2px solid #1d1f23; }
h2 .tag { font-size: 12px; font-weight: 600; color: #fff; background: #1d1f23; border-radius: 3px;
          padding: 1px 6px; margin-right: 8px; vertical-align: 2px; }
h3 { font-size: 14.5px; margin: 18px 0 4px; }
p { margin: 4px 0 10px; max-width: 88ch; }
.lead { color: #33363b; }
.note { color: var(--muted); font-size: 12.5px; }
.missing { color: var(--muted); font-style: italic; }
.scroll { overflow-x: auto; margin: 8px 0 4px; }
table { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 5px; text-align: right; white-space: nowrap; border-bottom: 1px solid var(--rule); }
thead th { background: var(--band); font-weight: 600; border-bottom: 1px solid #c9ccd1; }
thead tr.group th { text-align: center; border-bottom: none; }
th.name, td.name, td.text { text-align: left; }
td.text { white-space: normal; max-width: 46ch; }
td.sep, th.sep { border-left: 1px solid #c9ccd1; }
tbody tr:hover { background: #fafbfc; }
.best-mllm { color: var(--mllm); font-weight: 700; }
.best-detector { color: var(--detector); font-weight: 700; }
.fam { display: inline-block; font-size: 11px; padding: 0 5px; border-radius: 3px; border: 1px solid; }
.fam-mllm { color: var(--mllm); } .fam-detector { color: var(--detector); } .fam-unknown { color: var(--muted); }
.up { color: #1b7f3b; } .down { color: #b8322a; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 2px; }
ul.verdicts li { margin: 3px 0; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--band);
       padding: 0 3px; border-radius: 3px; }
@media (max-width: 900px) { main { padding: 18px 14px; } }
@media print {
  @page { size: A4 landscape; margin: 10mm; }
  body { background: #fff; font-size: 10.5px; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  section { margin-top: 14px; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3, p.lead { break-after: avoid; page-break-after: avoid; }
  .scroll { overflow: visible; }
  table { font-size: 8.5px; break-inside: avoid; page-break-inside: avoid; }
  th, td { padding: 1.5px 4px; }
  tr, figure, img { break-inside: avoid; page-break-inside: avoid; }
  figure img { max-height: 180mm; width: auto; max-width: 100%; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def pct(value: float | None) -> str:
    """A [0, 1] metric as the paper prints it (x100, 2 decimals); undefined as a dash."""
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def tau(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def rank(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def signed(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if value else "0"


def family_badge(family: str, short: bool = True) -> str:
    """MLLM / conv (conventional detector) / ?, coloured like the best-of-family marks."""
    labels = {"mllm": ("MLLM", "MLLM"), "detector": ("conv", "conventional")}.get(family, ("?", "unknown"))
    return f'<span class="fam fam-{esc(family)}" title="{labels[1]}">{labels[0] if short else labels[1]}</span>'


def missing(sentence: str) -> str:
    """A section without data says so in one sentence instead of vanishing."""
    return f'<p class="missing">{esc(sentence)}</p>'


def figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, name_columns: int = 1,
          group_row: str = "", caption: str = "") -> str:
    """A table from already-escaped cells; the first `name_columns` are left-aligned names."""
    head = "".join(f'<th class="name">{h}</th>' if i < name_columns else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = "".join(c if c.startswith("<td") else (f'<td class="name">{c}</td>' if i < name_columns else f"<td>{c}</td>")
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption class='note'>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table>{cap}<thead>{group_row}<tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def section(anchor: str, tag: str, title: str, lead: str, body: str) -> str:
    badge = f'<span class="tag">{esc(tag)}</span>' if tag else ""
    return (f'<section id="{esc(anchor)}"><h2>{badge}{esc(title)}</h2>'
            f'<p class="lead">{lead}</p>{body}</section>')


def page(title: str, meta: str, nav: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"<header><h1>{esc(title)}</h1><div class=\"meta\">{meta}</div></header>"
            f"<nav>{links}</nav>{''.join(sections)}</main></body></html>\n")
