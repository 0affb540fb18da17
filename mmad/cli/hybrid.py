"""CLI of the detector + MLLM hybrid: `mmad contour`, what `mmad score --hybrid` says about its
gate (`print_gate_report`; the gating itself is mmad.scoring.hybrid_runs), and the gate note of
`mmad eval` (`print_gate_notes`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmad import config
from mmad.cli.options import HelpFormatter, add_data_options, finite_float
from mmad.cli.output import console, err_console


def register(sub) -> None:
    """`mmad contour`."""
    co = sub.add_parser("contour", help="draw a detector run's detected regions on the test images (PNG files)",
                        formatter_class=HelpFormatter)
    co.add_argument("detector_run", metavar="DETECTOR_RUN", help="a detector run folder (mmad score --provider patchcore)")
    add_data_options(co)
    co.add_argument("--out", required=True, help="folder for the PNGs (<out>/<dataset>/<subset>/<template path>)")
    co.add_argument("--gate-threshold", type=finite_float,
                    help="one threshold for every subset (default: per subset, the largest image score of the "
                         "detector's held-out normal images)")
    co.set_defaults(func=cmd_contour)


# --------------------------------------------------------------------------- mmad contour

def cmd_contour(args: argparse.Namespace) -> int:
    import csv
    import io

    from mmad.atomic import atomic_write_text
    from mmad.data import datasets
    from mmad.hybrid.contours import contour_png, write_bytes_atomic
    from mmad.hybrid.gate import decide, open_detector_run, subset_threshold
    detector = open_detector_run(args.detector_run)
    subsets = datasets.resolve(config.data_root(args.root), args.dataset, args.subset)
    out = Path(args.out)
    for subset in subsets:
        maps = detector.subset_maps(subset)
        threshold = subset_threshold(maps, args.gate_threshold, detector)
        template = datasets.load_subset(subset)
        folder = out / subset.dataset / subset.subset
        rows, drawn, below, missing = [], 0, 0, 0
        for rel in template.paths:
            decision = decide(maps, rel, threshold)
            if decision.verdict != "anomalous":
                below += decision.normal
                missing += not decision.normal
                rows.append((rel, "" if decision.score is None else repr(decision.score), decision.verdict, "", ""))
                continue
            data, pixels = contour_png(subset.test_root / rel, maps.maps[decision.row], threshold.value)
            target = folder / Path(rel).with_suffix(".png")
            write_bytes_atomic(target, data)
            drawn += 1
            rows.append((rel, repr(decision.score), decision.verdict, str(pixels), str(target.relative_to(folder))))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("path", "detector_score", "gate", "red_pixels", "contour_file"))
        writer.writerows(rows)
        atomic_write_text(folder / "contours.csv", buffer.getvalue())
        note = f", {missing} without a detector score" if missing else ""
        console.print(f"{subset.label}: threshold {threshold.describe()}; {drawn} of {len(template.paths)} images at "
                      f"or above it -> {drawn} contour PNGs in {folder} ({below} below: none drawn{note}); "
                      f"index {folder / 'contours.csv'}", markup=False, highlight=False, soft_wrap=True)
    return 0


# --------------------------------------------------------------------------- mmad score --hybrid

def print_gate_report(args, provider, report, *, to_stdout: bool) -> None:
    """Per hybrid run and subset: the threshold and how many jobs the gate decided (and, when the
    report goes to stdout for an estimate or dry run, what that saves)."""
    from mmad.scoring.hybrid_runs import gate_savings
    if getattr(args, "quiet", False) and not to_stdout:
        return
    out = console if to_stdout else err_console
    saved = gate_savings(report, provider, prices_path=getattr(args, "prices", None),
                         cache_dir=args.cache_dir) if to_stdout else {}
    for gated_run in report.runs:
        name, counts = gated_run.name, gated_run.counts
        out.print(f"hybrid {name}: gate = detector run {report.detector.name} ({report.detector.folder})",
                  markup=False, highlight=False)
        for count in counts:
            missing = f", {count.missing} without a detector score (error records)" if count.missing else ""
            out.print(f"  {count.label}: threshold {count.threshold.describe()}: {count.gated} of "
                      f"{count.gated + count.sent + count.missing} jobs gated (score 0 from the detector, not sent), "
                      f"{count.sent} to {gated_run.source.variant.model}{missing}", markup=False, highlight=False,
                      soft_wrap=True)
        gated = sum(c.gated for c in counts)
        total = sum(c.gated + c.sent + c.missing for c in counts)
        money = saved.get(name)
        dollars = f"; saves ~${money[0]:,.4f} of ~${money[1]:,.4f} (plain prices, jobs not already in the " \
                  f"response cache)" if money else ""
        out.print(f"  total: {gated} of {total} jobs decided by the gate, {total - gated} calls to the model"
                  f"{dollars}", markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- mmad eval

def print_gate_notes(records) -> None:
    """After `mmad eval`: per hybrid run, how many rows the detector gate decided (from the JSONL)."""
    from mmad.hybrid.plans import gate_counts
    for run, (gated, total, detector) in gate_counts([Path(r.source) for r in records if r.source]).items():
        err_console.print(f"note: {run}: {gated} of {total} row(s) decided by the detector gate (score 0 from "
                          f"{detector}; source \"gate\" in the JSONL, \"gate\" in the CSV's Decided By)",
                          markup=False, highlight=False, soft_wrap=True)
