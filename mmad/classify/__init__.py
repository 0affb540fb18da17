"""Anomaly classification (VELM, arXiv 2505.02626): which kind of defect an anomalous image shows.

classes.py  class descriptions (data files), truth.py  ground truth from folder names,
answers.py  answer -> class name, task.py  the engine task and its CSV, plan.py  jobs (raw or
contour-conditioned, optionally gated by a detector run), scores.py  accuracy / F1 / kappa /
confusion (numpy only), evaluate.py  per category and overall, cli.py  `mmad classify` and
`mmad eval --task classify`.
"""
