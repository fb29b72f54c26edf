"""Aggregates with 95% confidence intervals, shared by generation results and the leaderboard."""
from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054


def mean_ci(values: Sequence[float], n: int | None = None) -> dict:
    """Mean and a 95% normal-approximation CI (Wilson's interval when every value is 0 or 1).

    ``n`` counts questions that were intended but never finished as zeros, as FireAct divides
    EM by the number of questions asked, not answered.
    """
    values = [float(v) for v in values]
    n = len(values) if n is None else n
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    total = sum(values)
    mean = total / n
    if all(v in (0.0, 1.0) for v in values):
        denom = 1 + Z95**2 / n
        centre = (mean + Z95**2 / (2 * n)) / denom
        half = Z95 * math.sqrt(mean * (1 - mean) / n + Z95**2 / (4 * n * n)) / denom
        # Wilson's interval holds the mean; clamped so that rounding cannot put it outside (at mean 0,
        # centre - half is 3e-18, and a plot's error bar below the bar would be negative).
        return {"mean": mean, "lo": min(mean, max(0.0, centre - half)), "hi": max(mean, min(1.0, centre + half)),
                "n": n}
    padded = values + [0.0] * (n - len(values))
    var = sum((v - mean) ** 2 for v in padded) / (n - 1) if n > 1 else 0.0
    half = Z95 * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if all(0.0 <= v <= 1.0 for v in values):  # a score in [0, 1] (F1): so is its interval
        lo, hi = max(0.0, lo), min(1.0, hi)
    return {"mean": mean, "lo": lo, "hi": hi, "n": n}
