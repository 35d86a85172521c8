"""Latency as a distribution: the p95 of binned histograms and a treatment-minus-control
difference with a bucket-bootstrap confidence interval.

Input: each arm's latency histogram per user bucket (``counts[bucket][bin]``, per-bin
counts, not cumulative) over shared upper bounds ``le`` (seconds); the last bin of each
row is the overflow above ``le[-1]`` (Prometheus' ``+Inf`` bucket).

The quantile follows Prometheus' ``histogram_quantile`` exactly: rank ``q * total``, the
first bucket whose cumulative count reaches it, linear interpolation inside it (from 0 for
the first bucket), and the last finite bound when the rank falls in ``+Inf``.

The interval: the 64 user buckets are independent replicates (users are the
randomisation unit), so each arm's buckets are resampled with replacement, independently,
summed, and the p95 difference recomputed; the percentile interval of the resamples is
the confidence interval. The seed comes from the input, so one input always gives one
answer (a re-run of the same analysis cannot flip the decision).

As a guardrail: the treatment breaches when the lower end of the two-sided
``1 - 2 * alpha_one_sided`` interval lies above the margin, i.e. it is shown slower
than control by more than ``margin`` ms with one-sided confidence ``1 - alpha_one_sided``.
The bootstrap interval is not always-valid, so repeated looks inflate its error rate; the
margin (a difference well above the noise of a p95) is what keeps an A/A run quiet, and
the decision module uses ``alpha / 2`` (Bonferroni across treatments) for the one-sided
level. ``bench/bench_latency_guardrail.py`` measures both.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

#: Bootstrap resamples per comparison: percentile ends at 2.5 % have ~50 resamples beyond.
N_RESAMPLES = 2000
QUANTILE = 0.95

FloatArray = npt.NDArray[np.float64]


def histogram_quantile(q: float, le: ArrayLike, counts: ArrayLike) -> float | FloatArray:
    """Prometheus' ``histogram_quantile(q, ...)`` of per-bin ``counts`` (last = ``+Inf``).

    ``counts`` is one histogram (``len(le) + 1`` bins) or a stack of them (shape
    ``(n, len(le) + 1)``, one quantile each). ``le`` must be positive and increasing.
    NaN for an empty histogram.
    """
    bounds = np.asarray(le, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    single = c.ndim == 1
    c2 = c[None, :] if single else c
    if c2.shape[-1] != bounds.size + 1:
        raise ValueError(f"need len(le) + 1 = {bounds.size + 1} bins, got {c2.shape[-1]}")
    cum = np.cumsum(c2, axis=1)
    total = cum[:, -1]
    rank = q * total
    finite = cum[:, :-1]
    reached = finite >= rank[:, None]
    in_inf = ~reached.any(axis=1)
    b = np.where(in_inf, 0, reached.argmax(axis=1))
    rows = np.arange(cum.shape[0])
    end = bounds[b]
    start = np.where(b > 0, bounds[np.maximum(b - 1, 0)], 0.0)
    below = np.where(b > 0, finite[rows, np.maximum(b - 1, 0)], 0.0)
    in_bin = finite[rows, b] - below
    with np.errstate(invalid="ignore", divide="ignore"):
        value = start + (end - start) * (rank - below) / in_bin
    value = np.where(in_inf, bounds[-1], value)
    value = np.where(total > 0, value, np.nan)
    return float(value[0]) if single else value


@dataclass(frozen=True)
class QuantileDifference:
    """Treatment minus control at quantile ``q``, in the histograms' unit."""

    control: float
    treatment: float
    difference: float
    ci: tuple[float, float]
    resamples: int


def _seed(*arrays: FloatArray) -> int:
    h = hashlib.blake2b(digest_size=8, person=b"rankexp-p95-ci")
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        h.update(b"|")
    return int.from_bytes(h.digest(), "big")


def _resample_weights(rng: np.random.Generator, n: int, resamples: int) -> FloatArray:
    """How often each of ``n`` buckets is drawn in each resample (with replacement)."""
    draws = rng.integers(0, n, size=(resamples, n))
    draws += n * np.arange(resamples)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(np.float64)


def _check(name: str, counts: FloatArray, n_bins: int) -> None:
    if counts.ndim != 2 or counts.shape[1] != n_bins or counts.shape[0] < 2:
        raise ValueError(
            f"{name}: need at least 2 buckets of {n_bins} bins, got shape {counts.shape}"
        )
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"{name}: counts must be finite and non-negative")


def quantile_difference(
    le: ArrayLike,
    control: ArrayLike,
    treatment: ArrayLike,
    *,
    alpha_one_sided: float = 0.025,
    q: float = QUANTILE,
    resamples: int = N_RESAMPLES,
    seed: int | None = None,
) -> QuantileDifference | None:
    """``q``-quantile of treatment minus control, with the two-sided ``1 - 2 *
    alpha_one_sided`` percentile interval of a bucket bootstrap.

    ``control`` and ``treatment``: per user bucket, per-bin counts (shape ``(buckets,
    len(le) + 1)``; the arms may have different bucket counts). None when an arm has
    no observation. ``seed`` None: derived from the input (deterministic).
    """
    bounds = np.asarray(le, dtype=np.float64)
    if bounds.ndim != 1 or bounds.size < 1 or not np.isfinite(bounds).all():
        raise ValueError("le: need at least one finite upper bound")
    if bounds[0] <= 0 or (np.diff(bounds) <= 0).any():
        raise ValueError("le: must be positive and increase strictly")
    if not 0 < alpha_one_sided < 0.5:
        raise ValueError(f"alpha_one_sided must be in (0, 0.5), got {alpha_one_sided}")
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    _check("control", c, bounds.size + 1)
    _check("treatment", t, bounds.size + 1)
    c_total, t_total = c.sum(axis=0), t.sum(axis=0)
    if c_total.sum() <= 0 or t_total.sum() <= 0:
        return None
    qc = float(histogram_quantile(q, bounds, c_total))
    qt = float(histogram_quantile(q, bounds, t_total))
    rng = np.random.default_rng(_seed(bounds, c, t) if seed is None else seed)
    boot_c = histogram_quantile(q, bounds, _resample_weights(rng, c.shape[0], resamples) @ c)
    boot_t = histogram_quantile(q, bounds, _resample_weights(rng, t.shape[0], resamples) @ t)
    diffs = np.asarray(boot_t, dtype=np.float64) - np.asarray(boot_c, dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size < resamples // 2:  # nearly every resample lost an arm: too sparse
        return None
    low, high = np.quantile(diffs, [alpha_one_sided, 1.0 - alpha_one_sided])
    return QuantileDifference(
        control=qc,
        treatment=qt,
        difference=qt - qc,
        ci=(float(low), float(high)),
        resamples=int(diffs.size),
    )


def breaches(diff: QuantileDifference, margin: float) -> bool:
    """Shown above ``margin`` with confidence: the interval's lower end exceeds it."""
    return math.isfinite(diff.ci[0]) and diff.ci[0] > margin
