"""Cost: tokens and dollars, before a run (estimates) and during it (the --max-cost budget).

    tokens.py     counting tokens the way each provider bills a request (text and images)
    prices.py     the versioned price table (mmad/assets/prices.toml, or --prices)
    estimate.py   per-plan estimates and the budget meter that stops a run before it passes its budget
"""
