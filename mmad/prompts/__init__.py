"""Prompts: the instruction texts as data, and reading the score back out of an answer.

    templates.py   prompt files (packaged `mmad/assets/prompts/*.toml`, or your own), rendered strictly
    parsing.py     `Anomaly Score: N` and the reason, strict form first, then lenient ones
"""
