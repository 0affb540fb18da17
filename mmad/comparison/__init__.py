"""Comparison of runs: is a difference between two runs (a prompt ablation, another model) real?

    compare.py      pairing items of two runs and the paired, level-stratified bootstrap per subset and pooled
    results.py      what a comparison found, as data (and JSON)
    verdicts.py     the one-line verdicts `mmad compare` and the report print
    noise.py        run-to-run noise between repeats of one run
    run_data.py     a run on disk as compare and noise read it (tables, run.json, final records, cost)
"""
