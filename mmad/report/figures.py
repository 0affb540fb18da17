"""The report's figures, drawn with matplotlib (Agg) and embedded as base64 PNG data URIs.

matplotlib is an optional extra (`pip install 'mmad[report]'`); `require_matplotlib` turns its
absence into one ConfigError line. Every run keeps one colour and marker across all figures;
line style tells the family (solid = MLLM, dashed = conventional detector, dotted = unknown).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmad.errors import ConfigError

WIDTH_IN = 11.0  # 1100 px at DPI: the page's content width
DPI = 100
LineStyle = Literal["-", "--", ":"]  # the matplotlib line styles the families use
FAMILY_STYLE: dict[str, tuple[LineStyle, str]] = {"mllm": ("-", "o"), "detector": ("--", "s"), "unknown": (":", "^")}
MAX_POINTS = 60  # dots per level and panel in the distribution plots
LEVEL_COLOURS = ("#4c78a8", "#f2b134", "#ed7b2f", "#d1432a", "#9c1f2e", "#5c0f24", "#2d0714")


def require_matplotlib():
    """The pyplot module (Agg backend), or a one-line ConfigError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the HTML report needs matplotlib: pip install 'mmad[report]' "
                          "(or use --json, which needs nothing more)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
                         "text.parse_math": False})  # a "$" in a run name is text, not TeX
    return plt


@dataclass(frozen=True)
class RunStyle:
    colour: str
    line: LineStyle
    marker: str


def run_styles(families: Mapping[str, str]) -> dict[str, RunStyle]:
    """run name -> style, in the runs' order: tab10's colours, then Dark2's (all dark enough for
    text on white; tab20's pale halves are not), then round again."""
    plt = require_matplotlib()
    palette = [plt.get_cmap("tab10")(i) for i in range(10)] + [plt.get_cmap("Dark2")(i) for i in range(8)]
    styles: dict[str, RunStyle] = {}
    for i, (run, family) in enumerate(families.items()):
        line, marker = FAMILY_STYLE.get(family, FAMILY_STYLE["unknown"])
        rgb = palette[i % len(palette)]
        styles[run] = RunStyle("#{:02x}{:02x}{:02x}".format(*tuple(int(255 * c) for c in rgb[:3])), line, marker)
    return styles


def to_data_uri(fig, *, tight: bool = True) -> str:
    """PNG data URI, quantised to a 256-colour palette (a third of the bytes, no visible change)."""
    from PIL import Image

    plt = require_matplotlib()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        small = io.BytesIO()
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(small, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(small.getvalue()).decode("ascii")


def _fixed_layout(fig, rows: int, panel_height: float, top_in: float = 0.45) -> None:
    """Margins in inches instead of tight_layout, which costs a full extra draw per figure."""
    height = rows * panel_height + top_in
    fig.set_figheight(height)
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - top_in / height, bottom=0.5 / height,
                        wspace=0.3, hspace=0.75 * 2.3 / panel_height)


def _grid(n_panels: int, per_row: int, panel_height: float, sharey: bool = True):
    """A grid of panels, `per_row` at most per row; a panel is never wider than a quarter page,
    so one or two panels do not stretch across the page."""
    plt = require_matplotlib()
    cols = max(1, min(per_row, n_panels))
    rows = math.ceil(n_panels / cols)
    width = min(WIDTH_IN, WIDTH_IN / per_row * cols + 0.8 * (cols < per_row))
    fig, axes = plt.subplots(rows, cols, figsize=(width, panel_height * rows), squeeze=False, sharey=sharey)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _legend(fig, styles: Mapping[str, RunStyle], runs: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles[r].colour, linestyle=styles[r].line, marker=styles[r].marker, label=r)
               for r in runs]
    per_entry_px = 7 * max(len(r) for r in runs) + 60  # ~7 px a character at 9 pt, plus the line sample
    ncol = max(1, min(len(handles), int(WIDTH_IN * DPI // per_entry_px)))
    fig.legend(handles=handles, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))


def curves_figure(panels: Mapping[str, Mapping[str, Mapping[int, float]]], styles: Mapping[str, RunStyle], *,
                  xlabel: str, ylabel: str, tick_label=str, percent: bool = True) -> str:
    """Small multiples: panel title -> run -> {x: y}; one line per run, shared y axis."""
    fig, axes = _grid(len(panels), 4, 2.6)
    shown = []
    for ax, (title, by_run) in zip(axes, panels.items()):
        xs_all = sorted({x for curve in by_run.values() for x in curve})
        for run, curve in by_run.items():
            xs = [x for x in xs_all if x in curve and not math.isnan(curve[x])]
            ys = [100 * curve[x] if percent else curve[x] for x in xs]
            style = styles[run]
            ax.plot(xs, ys, color=style.colour, linestyle=style.line, marker=style.marker, markersize=4, lw=1.6)
            shown.append(run)
        ax.set_title(title)
        ax.set_xticks(xs_all, [tick_label(x) for x in xs_all])
        ax.set_xlabel(xlabel)
    for ax in axes[::4]:
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    _legend(fig, styles, list(dict.fromkeys(shown)))  # below the panels, after the layout
    return to_data_uri(fig)


def distribution_figure(title: str, panels: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
                        styles: Mapping[str, RunStyle]) -> str:
    """One subset: per run a panel of scores by severity level (box + jittered points).

    `panels`: run -> (levels, scores, caption). Scales differ between runs, so each panel has
    its own y axis."""
    fig, axes = _grid(len(panels), 4, 2.3, sharey=False)
    rng = np.random.default_rng(0)  # sample and jitter only; fixed so the page is reproducible
    for ax, (run, (levels, scores, caption)) in zip(axes, panels.items()):
        present = sorted(set(levels.tolist()))
        data = [scores[levels == lv] for lv in present]
        ax.boxplot(data, positions=present, widths=0.55, showfliers=False, medianprops={"color": "#222"},
                   boxprops={"color": "#888"}, whiskerprops={"color": "#888"}, capprops={"color": "#888"})
        for lv, values in zip(present, data):
            if values.size > MAX_POINTS:  # the box uses every score; the dots are a sample
                values = rng.choice(values, MAX_POINTS, replace=False)
            jitter = rng.uniform(-0.18, 0.18, values.size)
            ax.scatter(lv + jitter, values, s=9, alpha=0.75, color=LEVEL_COLOURS[min(lv, len(LEVEL_COLOURS) - 1)],
                       edgecolors="none", zorder=3)
        ax.set_title(run, color=styles[run].colour, fontweight="bold", fontsize=9)
        ax.text(0.02, 0.97, caption, transform=ax.transAxes, va="top", fontsize=7.5, color="#444")
        ax.set_xticks(present, [str(lv) for lv in present])
        ax.set_xlabel("severity level")
    axes[0].set_ylabel("anomaly score")
    fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
    _fixed_layout(fig, math.ceil(len(panels) / 4), 2.3)
    return to_data_uri(fig, tight=False)


def area_figure(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]],
                styles: Mapping[str, RunStyle]) -> str:
    """RQ3 at a glance: score against anomalous area, coloured by risk level, one panel per run."""
    fig, axes = _grid(len(panels), 4, 2.4, sharey=False)
    for ax, (run, (area, scores, risk, caption)) in zip(axes, panels.items()):
        for lv in sorted(set(risk.tolist())):
            pick = risk == lv
            ax.scatter(area[pick], scores[pick], s=10, alpha=0.8, edgecolors="none", label=f"level {lv}",
                       color=LEVEL_COLOURS[min(lv, len(LEVEL_COLOURS) - 1)])
        ax.set_title(run, color=styles[run].colour, fontweight="bold", fontsize=9)
        ax.text(0.02, 0.97, caption, transform=ax.transAxes, va="top", fontsize=7.5, color="#444")
        ax.set_xlabel("anomalous area (px at width 256)")
    axes[0].set_ylabel("anomaly score")
    axes[0].legend(fontsize=7, frameon=False, loc="lower right")
    fig.tight_layout()
    return to_data_uri(fig)
