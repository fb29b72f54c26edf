"""Paired comparisons of two runs on the same questions: bootstrap and normal-approximation CIs
of the difference, and McNemar's exact test for EM."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from fireharness.stats import Z95

BOOTSTRAP_SEED = 233  # fixed, so a table printed twice is the same table
BOOTSTRAP_RESAMPLES = 10_000


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b questions only A got right, c only B got right.

    Under H0 the b+c discordant pairs split Binomial(b+c, 1/2); p = 2 * P(X <= min(b, c)), capped at 1.
    """
    n = b + c
    if n == 0:
        return 1.0
    try:  # scipy, where installed, is the reference implementation
        from scipy.stats import binomtest

        return float(binomtest(min(b, c), n, 0.5).pvalue)
    except ImportError:
        pass
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = BOOTSTRAP_SEED,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Mean of ``b - a`` over paired questions with a percentile-bootstrap 95% CI (questions
    resampled with a fixed seed), a normal-approximation CI and its two-sided p-value."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired values must have the same length")
    n = len(a)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "a": nan, "b": nan, "diff": nan, "boot_lo": nan, "boot_hi": nan,
                "norm_lo": nan, "norm_hi": nan, "p_normal": nan}
    d = b - a
    mean = float(d.mean())
    rng = np.random.default_rng(seed)
    # Drawn in blocks of about 4 M indices (32 MB), not resamples x n at once (800 MB for two 10,000-question
    # runs); the generator's stream is the same either way, so are the resamples.
    block = max(1, (1 << 22) // n)
    boots = np.concatenate([d[rng.integers(0, n, size=(min(block, resamples - i), n))].mean(axis=1)
                            for i in range(0, resamples, block)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    p = math.erfc(abs(mean) / se / math.sqrt(2)) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"n": n, "a": float(a.mean()), "b": float(b.mean()), "diff": mean, "boot_lo": float(lo),
            "boot_hi": float(hi), "norm_lo": mean - Z95 * se, "norm_hi": mean + Z95 * se, "p_normal": p}
