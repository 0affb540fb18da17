"""The report: `mmad report`'s one self-contained HTML page (or JSON) with the paper's analyses.

    data.py      every analysis computed once (mmad.analysis), as data
    compare.py   the comparisons section (mmad.comparison verdicts)
    figures.py   matplotlib figures embedded as PNG data URIs
    html.py      the sections as HTML
    page.py      the page around them: CSS, number formats, helpers
"""
