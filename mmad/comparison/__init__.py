"""Comparison of runs: is a difference between two runs (a prompt ablation, another model) real?

    compare.py      pairing items of two runs, the paired tests and bootstrap per subset, the whole comparison
    scopes.py       fixed-effects pooling into the Table-3 means; tests and intervals with run-to-run noise
    decisions.py    the pre-specified procedure: primary question, fixed sequence, Holm across variants
    results.py      what a comparison found, as data (and JSON)
    verdicts.py     the one-line verdicts `mmad compare` and the report print
    noise.py        run-to-run noise between repeats of one run
    run_data.py     a run on disk as compare and noise read it (tables, run.json, final records, cost)
    pairs.py        which runs are variants of one another (the pairs the report and the view compare)
"""
