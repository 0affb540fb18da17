"""MMAD-QA (arXiv 2410.09453): the multiple-choice industrial inspection benchmark on mmad's engine.

    data.py      mmad.json and domain_knowledge.json: read and validated before any work
    synth.py     a generated set in the same format, with known answers (offline tests, demos)
    prompt.py    the prompt texts (data in mmad/assets/qa/*.toml), rendered strictly
    jobs.py      images + questions -> requests; single questions or cumulative conversations
    parsing.py   the option letter of an answer; refusals; unusable answers
    task.py      the engine's Task: interpret answers, write the per-dataset result CSV
    results.py   reading result files (ours and the reference's answers JSON)
    metrics.py   accuracy per dataset x subtask, balanced detection accuracy, bootstrap
    compare.py   paired comparison of two runs by question (bootstrap + exact McNemar)
    cli.py       `mmad qa ...` and `mmad eval --task qa`
"""
