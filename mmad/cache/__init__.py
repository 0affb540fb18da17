"""The response cache: every paid answer, content-addressed, so nothing is paid twice.

    store.py    the store (SQLite through diskcache): keys from the request's inputs, values the raw answer
    integrity.py  the checksum sealed into every answer and checked on every read
    repair.py   `mmad cache check` / `rebuild`: integrity, salvage, refill from result files
    claims.py   claims on requests being paid for, so runs sharing the cache pay once
"""
