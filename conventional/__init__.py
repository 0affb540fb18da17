"""Conventional anomaly detectors (torch): mmad's own PatchCore, PaDiM and Reverse Distillation
on an offline pretrained backbone, and anomalib's models through anomalib's Engine.

This package is the only place that imports torch; `mmad` itself never does.
"""
