"""The engine: every job of a run through cache, image preparation, admission, the provider call
and its record, concurrently and resumably. It knows providers, the cache and result records,
never the command line.

    work.py          the units: Job, SubsetPlan, and the Task that reads answers and writes result files
    jobs.py          building plans: one job per test image, keyed for the cache
    tasks.py         the scoring task (`Anomaly Score: N`)
    runner.py        the lifecycle of a job, from cache lookup to record; stop, resume, budgets
    ratecontrol.py   how many requests in flight and how fast (learned limits, 429 handling)
    failures.py      retries, backoff, the first request's checks and the breaker
    preparation.py   images prepared on worker threads, shared ones once
    records.py       which record of a job counts; the JSONL logs
    events.py        what the engine tells its listener, and the run's summary
    batch.py         the vendors' Batch APIs
    lock.py          one writer per output folder
"""
