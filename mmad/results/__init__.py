"""Results on disk: the files a run leaves and everything that reads them back.

    files.py     result CSVs (ours and the reference code's quirks), finding and labelling runs, JSONL logs
    runinfo.py   run.json: what a run is, its settings, which other run it may not be mixed with
"""
