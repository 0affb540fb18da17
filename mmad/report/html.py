"""The report as one HTML page: the paper's tables and figures for the runs at hand.

`render_html(data)` draws every section from a `ReportData` (mmad.report_data); a section whose
data is missing says so in one sentence. `data.verdicts` (lines from `mmad compare`) fill the
comparison section; None means they were not computed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from mmad import metrics
from mmad.analysis.paper_tables import LABELS, METRICS, column_values, dataset_title
from mmad.analysis.robustness import spec_label
from mmad.report.data import ReportData
from mmad.report.figures import RunStyle, area_figure, curves_figure, distribution_figure, run_styles
from mmad.report.page import esc, family_badge, figure, missing, page, pct, rank, section, signed, table, tau
from mmad.version import __version__

FORMAT = {"auroc": pct, "kendall_tau_b": tau, "c_index": pct}
HEAD = {"auroc": "AUC", "kendall_tau_b": "Ken", "c_index": "C"}


def render_html(data: ReportData) -> str:
    styles = run_styles({r.name: r.family for r in data.runs})
    parts = [
        ("runs", "Runs", _runs(data)),
        ("rq1", "RQ1 · Table 3", _table3(data)),
        ("rq2", "RQ2 · Rankings", _agreement(data)),
        ("rq3", "RQ3 · Area", _area(data, styles)),
        ("rq4", "RQ4 · By level", _by_level(data, styles)),
        ("rq5", "RQ5 · Expansion", _expansion(data, styles)),
        ("rq6", "RQ6 · Corruption", _robustness(data)),
        ("dist", "Score distributions", _distributions(data, styles)),
        ("spend", "Failures & spend", _spend(data)),
        ("compare", "Comparisons", _comparisons(data)),
    ]
    inputs = [Path(p) for p in data.inputs]
    common = _common_parent(inputs)
    listed = (f"{len(inputs)} inputs under {common}" if common and len(inputs) > 3 else ", ".join(data.inputs))
    meta = (f"generated {esc(data.generated)} · mmad {esc(__version__)} · ties: {esc(data.ties)} "
            f"(tied scores across levels earn {'half a pair' if data.ties == 'half' else 'nothing'}) · "
            f"{esc(listed)}")
    return page(data.title, meta, [(a, t) for a, t, _ in parts], [body for _, _, body in parts])


# --------------------------------------------------------------------------- runs, RQ1, RQ2

def _common_parent(paths: list[Path]) -> Path | None:
    try:
        common = Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    except ValueError:
        return None
    return common if len(paths) > 1 and common != Path(common.anchor) else None


def _runs(data: ReportData) -> str:
    folders = [f for run in data.runs for f in run.folders]
    common = _common_parent(folders)
    shown = (lambda f: f.resolve().relative_to(common).as_posix() or ".") if common else str
    rows = []
    for run in data.runs:
        s = run.settings
        what = s.get("model") or s.get("method") or "—"
        rows.append([esc(run.name), family_badge(run.family, short=False), esc(what), esc(s.get("prompt") or "—"),
                     esc(run.corrupt or "—"), str(len({t.dataset for t in run.tables})), str(len(run.tables)),
                     str(sum(len(t.paths) for t in run.tables)),
                     str(sum(int(np.isnan(t.scores).sum()) for t in run.tables)),
                     f'<td class="text">{esc(", ".join(shown(f) for f in run.folders))}</td>'])
    body = table(["run", "family", "model / method", "prompt", "corruption", "datasets", "subsets", "rows",
                  "no score", "folder"], rows, name_columns=5)
    if common:
        body += f'<p class="note">Folders under {esc(common)}.</p>'
    if not any(r.info for r in data.runs):
        body += missing("No run has a run.json, so families come from the JSONL records "
                        "(source \"local\" = a detector) and nothing can be grouped by settings.")
    return section("runs", "", "Runs", "What was evaluated. Family comes from run.json <code>kind</code>; "
                   "without run.json, JSONL records with <code>source: local</code> mark a detector.", body)


def _table3(data: ReportData) -> str:
    t = data.table3
    if not t.rows:
        return section("rq1", "RQ1", "Benchmark (Table 3)", "", missing("No runs to tabulate."))
    groups = [*t.datasets, "average", "rank"]
    group_row = '<tr class="group"><th></th>' + "".join(
        f'<th colspan="3" class="sep">{esc(dataset_title(g) if g not in ("average", "rank") else g.title())}</th>'
        for g in groups) + "</tr>"
    header = ["run"] + [HEAD[m] for _ in groups for m in METRICS]
    rows = []
    for row in t.rows:
        cells = [f"{esc(row.run)} {family_badge(row.family)}"]
        for g in groups:
            for i, m in enumerate(METRICS):
                column = f"{g}/{m}"
                value = column_values(row, column)
                text = rank(value) if g == "rank" else FORMAT[m](value)
                best = row.run in t.best.get(row.family, {}).get(column, [])
                classes = " ".join(c for c in ("sep" if i == 0 else "", f"best-{row.family}" if best else "") if c)
                cells.append(f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>")
        rows.append(cells)
    body = table(header, rows, group_row=group_row)
    body += ('<p class="note">AUC and C in %, Ken = Kendall tau-b; each dataset cell is the mean over its '
             'subsets, Average the mean over datasets. Ranks: 1 = best average; ties share the mean of the '
             'ranks they span. <span class="best-mllm">Red</span>: best MLLM; '
             '<span class="best-detector">blue</span>: best conventional detector (per column).</p>')
    if not t.like_for_like:
        body += missing("The runs cover different datasets, so their averages and ranks are not like for like.")
    if data.hidden:
        body += f'<p class="note">Corrupted variants shown only in RQ6: {esc(", ".join(sorted(data.hidden)))}.</p>'
    return section("rq1", "RQ1", "Benchmark and model type (Table 3)",
                   "Binary detection (AUC) and severity alignment (Ken, C) per dataset, averaged over subsets.", body)


def _agreement(data: ReportData) -> str:
    a = data.agreement
    lead = "Do the binary metric (AUC) and the multilevel metrics (Ken, C) rank the runs alike?"
    if len(a.ranks) < 3:
        return section("rq2", "RQ2", "Binary vs multilevel rankings", lead,
                       missing(f"Rank agreement needs at least 3 runs with all three metrics defined; "
                               f"these inputs have {len(a.ranks)}."))
    matrix = table([""] + [LABELS[m] for m in a.metrics],
                   [[LABELS[m]] + [f"{v:.3f}" if not math.isnan(v) else "—" for v in row]
                    for m, row in zip(a.metrics, a.matrix)])
    diffs = table(["run", "AUC rank", "Ken rank", "C rank", "AUC − Ken", "AUC − C"],
                  [[esc(run), rank(r["auroc"]), rank(r["kendall_tau_b"]), rank(r["c_index"]),
                    signed(a.difference(run, "auroc", "kendall_tau_b"), 1 if _frac(r) else 0),
                    signed(a.difference(run, "auroc", "c_index"), 1 if _frac(r) else 0)] for run, r in a.ranks.items()])
    body = (f"<h3>Spearman correlation of the rankings ({len(a.ranks)} runs)</h3>{matrix}"
            f"<h3>Rank differences</h3>{diffs}"
            '<p class="note">A positive AUC − C means the run ranks better on severity alignment than on '
            'binary detection (the paper\'s MLLM pattern).</p>')
    return section("rq2", "RQ2", "Binary vs multilevel rankings", lead, body)


def _frac(ranks: dict[str, float]) -> bool:
    return any(not float(v).is_integer() for v in ranks.values())


# --------------------------------------------------------------------------- RQ3-RQ5

def _area(data: ReportData, styles: dict[str, RunStyle]) -> str:
    lead = ("C-index when severity is the anomalous area (equal-frequency area bins) instead of the risk "
            "level, and Spearman's ρ between area and score: is a bigger defect simply scored higher?")
    area = data.area
    if not area.records:
        return section("rq3", "RQ3", "Anomalous area effect (Table 4)", lead,
                       missing("No ground-truth masks were found (looked for <subset>/ground_truth/<folder>/"
                               "<name>_mask.png and under --masks), so the area analysis is skipped."))
    by = area.by_dataset()
    datasets = [d for d in data.table3.datasets if any(d in v for v in by.values())]
    group_row = '<tr class="group"><th></th>' + "".join(
        f'<th colspan="3" class="sep">{esc(dataset_title(d))}</th>' for d in datasets) + "</tr>"
    header = ["run"] + ["Risk C", "Area C", "ρ(area, score)"] * len(datasets)
    rows = []
    for run in data.main_runs:
        if run.name not in by:
            continue
        cells = [f"{esc(run.name)} {family_badge(run.family)}"]
        for d in datasets:
            v = by[run.name].get(d)
            cells += ([f'<td class="sep">{pct(v["c_risk"])}</td>', pct(v["c_area"]), tau(v["spearman_area_score"])]
                      if v else ['<td class="sep">—</td>', "—", "—"])
        rows.append(cells)
    body = table(header, rows, group_row=group_row)
    missing_masks = sum(r.masks_missing for r in area.records)
    body += ('<p class="note">C in %, on the same rows for both (normal images and anomalous images with a mask); '
             'masks resized to width 256 with nearest-neighbour resampling; ρ over anomalous images only.'
             + (f" {missing_masks} anomalous row(s) had no mask and were left out." if missing_masks else "") + "</p>")
    if area.without_masks:
        body += missing(f"No masks for: {', '.join(area.without_masks)}.")
    for d in datasets:
        panels = {}
        for run in data.main_runs:
            pts = area.points.get((run.name, d))
            if pts is not None and pts[0].size:
                v = by[run.name][d]
                panels[run.name] = (*pts, f"ρ = {tau(v['spearman_area_score'])}")
        if panels:
            body += figure(area_figure(panels, styles), f"score against area, {dataset_title(d)}",
                           f"{dataset_title(d)}: score against anomalous area; colour = risk level.")
    return section("rq3", "RQ3", "Anomalous area effect (Table 4)", lead, body)


def _by_level(data: ReportData, styles: dict[str, RunStyle]) -> str:
    lead = "AUROC of the normal class against each severity level on its own: are severe anomalies easier to detect?"
    panels = _panels(data, lambda run, d: data.levels.curves.get(run, {}).get(d))
    if not panels:
        return section("rq4", "RQ4", "Detection across severity (Figure 3)", lead, missing("No anomalous levels to plot."))
    uri = curves_figure(panels, styles, xlabel="severity level", ylabel="AUROC (%)", tick_label=lambda x: f"L{x}")
    rows = [[esc(run), esc(dataset_title(d))] + [pct(c.get(lv, math.nan)) for lv in _levels(panels)]
            for d, by_run in panels.items() for run, c in by_run.items()]
    body = figure(uri, "AUROC by severity level", "Mean over each dataset's subsets; one line per run.")
    body += table(["run", "dataset"] + [f"L{lv}" for lv in _levels(panels)], rows, name_columns=2)
    return section("rq4", "RQ4", "Detection across severity (Figure 3)", lead, body)


def _expansion(data: ReportData, styles: dict[str, RunStyle]) -> str:
    lead = ("Levels ≤ i counted as normal at test time (light anomalies accepted): does a run keep "
            "separating what is left? AUROC and C-index per dataset as the normal class grows.")
    by_metric = {m: _panels(data, lambda run, d, m=m: data.expansion.curves.get(run, {}).get(d, {}).get(m))
                 for m in ("auroc", "c_index")}
    panels = {f"{title} · {LABELS[m]}": by_metric[m][title]  # dataset by dataset: AUC, then C
              for title in by_metric["auroc"] for m in by_metric
              if any(len(c) > 1 for c in by_metric[m].get(title, {}).values())}
    if not panels:
        return section("rq5", "RQ5", "Normal class expansion (Figure 4)", lead,
                       missing("Every dataset here has a single anomalous level, so the normal class cannot expand."))
    uri = curves_figure(panels, styles, xlabel="normal class: levels ≤ i", ylabel="%", tick_label=lambda x: f"≤{x}")
    body = figure(uri, "metrics under normal-class expansion",
                  "Mean over each dataset's subsets; “≤i”: levels up to i count as normal.")
    return section("rq5", "RQ5", "Normal class expansion (Figure 4)", lead, body)


def _panels(data: ReportData, curve_of) -> dict[str, dict[str, dict[int, float]]]:
    panels: dict[str, dict[str, dict[int, float]]] = {}
    for d in data.table3.datasets:
        for run in data.main_runs:
            curve = curve_of(run.name, d)
            if curve:
                panels.setdefault(dataset_title(d), {})[run.name] = curve
    return panels


def _levels(panels: dict[str, dict[str, dict[int, float]]]) -> list[int]:
    return sorted({lv for by_run in panels.values() for c in by_run.values() for lv in c})


# --------------------------------------------------------------------------- RQ6, distributions, spend, compare

def _robustness(data: ReportData) -> str:
    lead = "C-index (%) of each run on original and corrupted inputs (ImageNet-C brightness and Gaussian noise)."
    r = data.robustness
    if not r.groups:
        note = ("No corrupted runs among the inputs (run.json settings.corrupt), so there is no robustness table."
                if not r.without_info else
                f"No corrupted runs among the inputs; {len(r.without_info)} run(s) without run.json could not "
                "be checked for a corruption setting.")
        return section("rq6", "RQ6", "Robustness (Table 5)", lead, missing(note))
    group_row = '<tr class="group"><th></th>' + "".join(
        f'<th colspan="{len(r.specs)}" class="sep">{esc(dataset_title(d))}</th>' for d in r.datasets) + "</tr>"
    header = ["run"] + [esc(spec_label(s)) for _ in r.datasets for s in r.specs]
    rows = []
    for g in r.groups:
        cells = [f"{esc(g.label)} {family_badge(g.family)}"]
        for d in r.datasets:
            base = g.c_index.get("orig", {}).get(d, math.nan)
            for i, s in enumerate(r.specs):
                value = g.c_index.get(s, {}).get(d, math.nan)
                cls = ["sep"] if i == 0 else []
                if s != "orig" and not math.isnan(value) and not math.isnan(base):
                    cls.append("down" if value < base else "up")
                cells.append(f'<td class="{" ".join(cls)}">{pct(value)}</td>' if cls else f"<td>{pct(value)}</td>")
        rows.append(cells)
    body = table(header, rows, group_row=group_row)
    body += ('<p class="note">Brgt S: brightness, V + c in HSV, c = .1/.2/.3/.4/.5 for S = 1..5; Noise S: '
             'Gaussian noise, σ = .08/.12/.18/.26/.38 (ImageNet-C). Red: below the original.</p>')
    return section("rq6", "RQ6", "Robustness (Table 5)", lead, body)


def _distributions(data: ReportData, styles: dict[str, RunStyle]) -> str:
    lead = ("Scores by severity level, per subset: boxes climbing from left to right mean the scores follow "
            "severity; overlapping boxes are levels the run cannot tell apart.")
    by_subset: dict[tuple[str, str], dict[str, tuple]] = {}
    records = {(r.run, r.dataset, r.subset): r for r in data.records}
    for run in data.main_runs:
        for t in run.tables:
            levels, scores, _ = metrics.drop_missing(metrics.severity_levels(t.severity), t.scores)
            if scores.size:
                rec = records[(run.name, t.dataset, t.subset)]
                caption = f"AUC {pct(rec.auroc)}  C {pct(rec.c_index)}  Ken {tau(rec.kendall_tau_b)}"
                by_subset.setdefault((t.dataset, t.subset), {})[run.name] = (levels, scores, caption)
    if not by_subset:
        return section("dist", "", "Score distributions", lead, missing("No scored rows."))
    order = {d: i for i, d in enumerate(data.table3.datasets)}
    body = ""
    for (d, s), panels in sorted(by_subset.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        label = dataset_title(d) if d == s else f"{dataset_title(d)} / {s}"
        body += figure(distribution_figure(label, panels, styles), f"score distribution {label}")
    return section("dist", "", "Score distributions per level", lead, body)


def _spend(data: ReportData) -> str:
    statuses = sorted({k for s in data.spend for k in s.statuses}, key=lambda k: (k != "ok", k))
    rows = []
    for s in data.spend:
        tokens = s.tokens
        rows.append([esc(s.run), str(s.rows), str(s.dropped)] + [str(s.statuses.get(k, 0)) for k in statuses]
                    + [esc(", ".join(f"{k} {v}" for k, v in sorted(s.sources.items())) or "—"),
                       f"{tokens.get('input_tokens', 0):,}" if tokens else "—",
                       f"{tokens.get('output_tokens', 0):,}" if tokens else "—",
                       "—" if s.usd is None else f"${s.usd:,.4f}",
                       "—" if s.saved_usd is None else f"${s.saved_usd:,.4f}",
                       f'<td class="text">{esc(s.note)}</td>'])
    body = table(["run", "rows", "no score"] + [esc(k) for k in statuses]
                 + ["sources", "input tok", "output tok", "spend", "saved by cache", "note"], rows)
    body += ('<p class="note">Statuses: the last record per image. Tokens and spend: every paid record '
             '(live or batch, retries included), priced from the price table for run.json\'s model.</p>')
    return section("spend", "", "Failures and spend", "What failed, and what it cost (from the JSONL records).", body)


def _comparisons(data: ReportData) -> str:
    lead = "Verdicts of <code>mmad compare</code> for runs that are variants of one another."
    if data.verdicts:
        items = "".join(f"<li>{esc(v)}</li>" for v in data.verdicts)
        return section("compare", "", "Comparisons", lead, f'<ul class="verdicts">{items}</ul>')
    if data.variants:
        items = "".join(f"<li>{esc(v)}</li>" for v in data.variants[:20])
        return section("compare", "", "Comparisons", lead,
                       missing("No verdicts were passed to this report; these runs are variants of one another:")
                       + f'<ul class="verdicts">{items}</ul>')
    return section("compare", "", "Comparisons", lead,
                   missing("No runs here are variants of one another (same kind, one or two settings apart)."))
