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


# --- repeated sampling (generation.py --num_samples K) ---------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples drawn without replacement from n, c of them correct, is
    correct: Chen et al. (2021)'s unbiased estimator 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_vote(answers: Sequence) -> int | None:
    """Position of the self-consistency answer among normalised ``answers`` (None: no answer): the most
    frequent one, ties going to the one given first. None when every answer is None."""
    counts: dict = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)


def sample_ks(k_max: int) -> list:
    """The k reported for K samples: 1, 2, 4, ... and K itself."""
    ks, k = [], 1
    while k < k_max:
        ks.append(k)
        k *= 2
    return ks + [k_max]


def repeated_sampling(questions: Sequence[Sequence[tuple]], k_max: int) -> dict:
    """pass@k and majority-vote EM over questions, each a list of its samples' ``(em, answer key)``
    (answer key: the normalised prediction, None when the episode gave none). Questions asked but with
    no sample count 0; a question with fewer than k samples counts whether any of them is right."""
    result = {}
    for k in sample_ks(k_max):
        values = []
        for samples in questions:
            n, c = len(samples), sum(1 for em, _ in samples if em and em >= 0.5)
            values.append(pass_at_k(n, c, k) if n >= k else float(c > 0))
        result[f"pass@{k}"] = mean_ci(values)
    votes = []
    for samples in questions:
        winner = majority_vote([key for _, key in samples])
        votes.append(float(samples[winner][0] or 0.0) if winner is not None else 0.0)
    result["majority_em"] = mean_ci(votes)
    return result
