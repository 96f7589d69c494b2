"""Agreement between two raters' counts of the same images (Bland & Altman 1986).

Two operators who reviewed the same images blind, or an operator and the model: how many more
cells one counts than the other on average, and within which limits 95 % of their differences
fall. The Dashboard draws it before and after the experts' adjudication.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Agreement", "bland_altman", "LOA_Z"]

#: Half-width of the limits of agreement in standard deviations (Bland & Altman 1986: 95 %).
LOA_Z = 1.96


@dataclass(frozen=True)
class Agreement:
    """Bland-Altman agreement between two sets of paired counts.

    Attributes
    ----------
    n : int
        Number of pairs (images counted by both).
    bias : float
        Mean of ``a - b``: how many more cells ``a`` counts than ``b`` on average.
    sd : float
        Sample standard deviation of ``a - b`` (``ddof=1``); NaN with a single pair.
    lower, upper : float
        Limits of agreement ``bias -/+ 1.96 sd``: 95 % of differences are expected between them.
    mean_abs_difference : float
        Mean of ``|a - b|``.
    means, differences : tuple of float
        Per pair ``(a + b) / 2`` and ``a - b``, the two axes of a Bland-Altman plot.
    """

    n: int
    bias: float
    sd: float
    lower: float
    upper: float
    mean_abs_difference: float
    means: tuple[float, ...]
    differences: tuple[float, ...]

    def to_dict(self) -> dict:
        """The scalar fields, for a table row."""
        return {"n": self.n, "bias": self.bias, "sd": self.sd, "lower": self.lower,
                "upper": self.upper, "mean_abs_difference": self.mean_abs_difference}


def bland_altman(a, b) -> Agreement:
    """Mean difference and limits of agreement between paired counts ``a`` and ``b``.

    Parameters
    ----------
    a, b : array_like of float, same length
        Counts of the same images by two raters (pair ``i`` is image ``i``).

    Returns
    -------
    Agreement
        ``bias = mean(a - b)``, ``sd`` (sample), limits ``bias -/+ 1.96 sd``.

    Raises
    ------
    ValueError
        When the lengths differ, nothing is paired, or a count is not finite.

    Examples
    --------
    >>> ag = bland_altman([10, 12, 8], [9, 12, 10])
    >>> round(ag.bias, 4), round(ag.sd, 4), ag.n
    (-0.3333, 1.5275, 3)
    >>> round(ag.lower, 3), round(ag.upper, 3)
    (-3.327, 2.661)
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Agreement needs paired counts, got {a.size} and {b.size} values.")
    if a.size == 0:
        raise ValueError("No image was counted by both raters, so there is no agreement to show.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("A count is missing or not a number; every paired count must be finite.")
    diff = a - b
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
    return Agreement(
        n=int(diff.size),
        bias=bias,
        sd=sd,
        lower=bias - LOA_Z * sd,
        upper=bias + LOA_Z * sd,
        mean_abs_difference=float(np.abs(diff).mean()),
        means=tuple(float(v) for v in (a + b) / 2.0),
        differences=tuple(float(v) for v in diff),
    )
