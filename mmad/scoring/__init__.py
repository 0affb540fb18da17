"""Scoring: from what the user asked (options or an experiment file) to finished runs.

The library entry point that `mmad score`, `mmad qa run`, `mmad classify` and `mmad.api.score`
share: variants and their folders, the budget meter, the engine session, summary.json.

    options.py       ScoreOptions: everything a scoring run is asked to do, with the built-in defaults
    variants.py      the grid: one Variant per combination, its run name and run.json settings
    value_checks.py  the checks flags and experiment files share
    runs.py          variants to VariantRuns (folders, plans), and the one-run-per-folder check
    hybrid_runs.py   --hybrid: runs gated by a detector run
    session.py       the session: meter, engine run, folders locked
    summary.py       summary.json
"""
