"""Conventional anomaly detectors (torch): PatchCore and PaDiM on an offline pretrained backbone.

This package is the only place that imports torch; `mmad` itself never does.
"""
