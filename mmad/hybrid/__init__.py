"""Hybrid scoring: a conventional detector's run gates the MLLM (normal images never sent) and can
show it the detected region as a contour.

    gate.py       a detector run's maps and scores, the threshold rule, the gate's decisions
    contours.py   the detected region drawn as a red contour
    plans.py      gated plans: gate jobs recorded locally, the rest sent to the model
"""
