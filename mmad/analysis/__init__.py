"""Analysis: the paper's research questions over finished runs, on top of the metrics core.

Reads result files (mmad.results) and computes what `mmad eval` and `mmad report` show.

    evaluate.py          Table-3 metrics per subset and dataset, bootstrap intervals, ranking agreement
    runs.py              result files grouped into runs (run.json, detector or MLLM family)
    paper_tables.py      Table 3 (RQ1) and the rank agreement between metrics (RQ2)
    area.py              anomalous area as severity (RQ3, Table 4)
    severity_curves.py   detection per severity level (RQ4) and normal-class expansion (RQ5)
    robustness.py        corrupted inputs (RQ6, Table 5)
    spend.py             failures, tokens and dollars per run, from the JSONL records
"""
