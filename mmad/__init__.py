"""mmad: measure how well anomaly scores follow anomaly severity (MAD-Bench, arXiv 2411.14515)."""

__version__ = "0.1.0"
