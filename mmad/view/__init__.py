"""`mmad view`: every run and every answer in the browser.

The view reads result folders lazily and writes nothing into them: `catalog` finds the runs,
`items` reads one run's items (with how mis-ranked each is), `summary` condenses a run for the
runs page and `mmad runs`, `rebuild` rebuilds the request an item sent (its prepared images and
prompt), `verdicts` runs `compare` for two runs, `server` serves it all to the static front end in
`static/`, and `export` writes the same data as a folder that opens from file://.
Nothing here imports mmad.cli.
"""
