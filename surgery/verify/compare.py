"""Compare output arrays: max abs / max rel error, cosine similarity, tolerance verdict."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from surgery.pass_base import Tolerance

__all__ = ["HISTOGRAM_EDGES", "ArrayDiff", "diff_arrays", "histogram_labels"]

#: Decade edges of the absolute-error histogram: bins are exactly 0, (0, 1e-10), [1e-10, 1e-9) … [1, 10), ≥ 10.
HISTOGRAM_EDGES: tuple[float, ...] = tuple(10.0**k for k in range(-10, 2))


def histogram_labels() -> list[str]:
    """One label per bin of :attr:`ArrayDiff.histogram`."""
    edges = HISTOGRAM_EDGES
    return [
        "0",
        f"<{edges[0]:g}",
        *(f"{lo:g}..{hi:g}" for lo, hi in itertools.pairwise(edges)),
        f">={edges[-1]:g}",
    ]


def _histogram(err: np.ndarray) -> list[int]:
    """Counts of ``err`` (finite, ≥ 0) in the bins of :func:`histogram_labels`."""
    nonzero = err[err > 0]
    counts = np.bincount(
        np.searchsorted(np.asarray(HISTOGRAM_EDGES), nonzero, side="right"),
        minlength=len(HISTOGRAM_EDGES) + 1,
    )
    return [int(err.size - nonzero.size), *(int(c) for c in counts)]


@dataclasses.dataclass
class ArrayDiff:
    """How far ``actual`` is from ``expected`` for one tensor."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    ok: bool
    tolerance: Tolerance | None = None
    problem: str | None = None
    """Set when the arrays cannot be compared value by value (shape, dtype kind, missing)."""
    enforced: bool = True
    """False when the deviation is only reported (a ``changes`` pass without a user tolerance)."""
    sample: str | None = None
    """The parity sample the numbers come from (the worst one over all samples)."""
    comparable: bool = True
    """False for an output that depends on a random op of the original (never blamed on a node)."""
    histogram: list[int] | None = None
    """Float outputs: element counts per absolute-error decade (bins of :func:`histogram_labels`)."""

    def describe(self) -> str:
        on = f" on sample '{self.sample}'" if self.sample else ""
        if self.problem:
            return f"{self.name}{on}: {self.problem}"
        tol = (
            f" (rtol {self.tolerance.rtol:g}, atol {self.tolerance.atol:g})"
            if self.tolerance
            else ""
        )
        return (
            f"{self.name}{on}: max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}, "
            f"cosine {self.cosine:.6f}{tol}"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "max_abs": _finite(self.max_abs),
            "max_rel": _finite(self.max_rel),
            "cosine": _finite(self.cosine),
            "ok": self.ok,
            "enforced": self.enforced,
            "rtol": self.tolerance.rtol if self.tolerance else None,
            "atol": self.tolerance.atol if self.tolerance else None,
            "problem": self.problem,
            "sample": self.sample,
            "comparable": self.comparable,
            "histogram": list(self.histogram) if self.histogram is not None else None,
        }


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _equal(name: str, tol: Tolerance) -> ArrayDiff:
    """Equal (or nothing to compare): no error, cosine 1."""
    return ArrayDiff(name, 0.0, 0.0, 1.0, True, tol)


def _incomparable(name: str, tol: Tolerance, problem: str) -> ArrayDiff:
    """Failed without numbers: what makes the arrays differ in kind (missing, shape, dtype, NaN)."""
    return ArrayDiff(name, math.inf, math.inf, 0.0, False, tol, problem=problem)


def _exact(
    name: str, actual: np.ndarray, expected: np.ndarray, tol: Tolerance, int_tolerance: int | None
) -> ArrayDiff:
    """Integers and bools: equal in their own values (never through float64, which rounds above 2**53)."""
    if (
        (actual.dtype.kind == "b") != (expected.dtype.kind == "b")
        or actual.dtype.kind in "fc"
        or expected.dtype.kind in "fc"
    ):
        return _incomparable(
            name,
            tol,
            f"element type {actual.dtype.name} where the original has {expected.dtype.name}",
        )
    if actual.size == 0:
        return _equal(name, tol)
    common = np.result_type(actual.dtype, expected.dtype)
    if common.kind not in "iub":  # uint64 beside a signed type: compare as Python integers
        a, e = actual.astype(object), expected.astype(object)
    else:
        a, e = actual.astype(common), expected.astype(common)
    differ = a != e
    count = int(np.count_nonzero(differ))
    if count == 0:
        return _equal(name, tol)
    # exact differences of the mismatching elements, as Python integers (no overflow, no rounding)
    worst_abs, worst_rel = 0, 0.0
    for x, y in zip(
        a[differ].ravel()[:4096].tolist(), e[differ].ravel()[:4096].tolist(), strict=True
    ):
        d = abs(int(x) - int(y))
        worst_abs = max(worst_abs, d)
        worst_rel = max(worst_rel, d / abs(int(y)) if int(y) else math.inf)
    ok = int_tolerance is not None and worst_abs <= int_tolerance and count <= 4096
    allowed = f"int_tolerance {int_tolerance}" if int_tolerance is not None else "exact"
    return ArrayDiff(
        name,
        float(worst_abs),
        worst_rel,
        0.0,
        ok,
        tol,
        problem=None
        if ok
        else f"{count} of {actual.size} integer values differ (max abs difference {worst_abs}; compared {allowed})",
    )


def diff_arrays(
    name: str,
    actual: np.ndarray | None,
    expected: np.ndarray | None,
    tol: Tolerance,
    *,
    int_tolerance: int | None = None,
) -> ArrayDiff:
    """Compare two arrays.

    Floats: NaNs and infinities must be at the same places (same sign), the rest within ``tol``.
    Integers and bools: exactly equal (``int_tolerance`` allows an absolute difference).
    """
    if actual is None or expected is None:
        which = "modified model" if actual is None else "original model"
        return _incomparable(name, tol, f"missing from the {which}")
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return _incomparable(
            name,
            tol,
            f"shape {list(actual.shape)} differs from the original's {list(expected.shape)}",
        )
    if actual.dtype.kind in "OSU" or expected.dtype.kind in "OSU":
        if np.array_equal(actual, expected):
            return _equal(name, tol)
        return _incomparable(name, tol, "string values differ")
    if actual.dtype.kind in "iub" or expected.dtype.kind in "iub":
        return _exact(name, actual, expected, tol, int_tolerance)
    if actual.size == 0:
        return _equal(name, tol)
    if actual.dtype == expected.dtype and np.array_equal(actual, expected):
        # bit-equal (NaN never is): nothing to measure; every element is in the exactly-0 bin
        return ArrayDiff(
            name,
            0.0,
            0.0,
            1.0,
            True,
            tol,
            histogram=[int(actual.size)] + [0] * (len(HISTOGRAM_EDGES) + 1),
        )
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if not np.array_equal(nan_a, nan_e):
        return _incomparable(
            name,
            tol,
            f"NaN at {int((nan_a != nan_e).sum())} positions where the other has a number",
        )
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    both_inf = inf_a & inf_e & (np.sign(a) == np.sign(e))
    if not np.array_equal(inf_a, both_inf) or not np.array_equal(inf_e, both_inf):
        wrong = int(((inf_a | inf_e) & ~both_inf).sum())
        return _incomparable(
            name, tol, f"Inf at {wrong} positions where the other has a number or the opposite sign"
        )
    mask = ~(nan_a | both_inf)
    a_m, e_m = a[mask], e[mask]
    if a_m.size == 0:
        return _equal(name, tol)
    err = np.abs(a_m - e_m)
    max_abs = float(err.max())
    denom = np.abs(e_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, err / denom, np.where(err > 0, np.inf, 0.0))
    max_rel = float(rel.max())
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(a_m) * np.linalg.norm(e_m))
        cosine = (
            float(np.dot(a_m, e_m) / norm)
            if norm > 0 and math.isfinite(norm)
            else (1.0 if max_abs == 0 else 0.0)
        )
    ok = bool(np.all(err <= tol.atol + tol.rtol * denom))
    return ArrayDiff(name, max_abs, max_rel, cosine, ok, tol, histogram=_histogram(err))
