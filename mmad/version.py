"""The version, in one place (the package, run.json and summary.json read it from here)."""

__version__ = "0.1.0"
