"""The response cache: every paid answer, content-addressed, so nothing is paid twice.

    store.py    the store (SQLite through diskcache): keys from the request's inputs, values the raw answer
    repair.py   `mmad cache check` / `rebuild`: integrity, salvage, refill from result files
"""
