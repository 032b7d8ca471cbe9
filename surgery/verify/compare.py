"""Compare output arrays: max abs / max rel error, cosine similarity, tolerance verdict."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from surgery.pass_base import Tolerance

__all__ = ["ArrayDiff", "diff_arrays"]


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

    def describe(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        tol = f" (rtol {self.tolerance.rtol:g}, atol {self.tolerance.atol:g})" if self.tolerance else ""
        return (
            f"{self.name}: max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}, "
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
        }


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def diff_arrays(name: str, actual: np.ndarray | None, expected: np.ndarray | None, tol: Tolerance) -> ArrayDiff:
    """Compare two arrays; NaNs at the same places count as equal, as do equal infinities."""
    if actual is None or expected is None:
        which = "modified model" if actual is None else "original model"
        return ArrayDiff(name, math.inf, math.inf, 0.0, False, tol, problem=f"missing from the {which}")
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return ArrayDiff(
            name, math.inf, math.inf, 0.0, False, tol,
            problem=f"shape {list(actual.shape)} differs from the original's {list(expected.shape)}",
        )
    if actual.dtype.kind in "OSU" or expected.dtype.kind in "OSU":
        same = bool(np.array_equal(actual, expected))
        return ArrayDiff(name, 0.0 if same else math.inf, 0.0 if same else math.inf, 1.0 if same else 0.0, same, tol,
                         problem=None if same else "string values differ")
    if actual.size == 0:
        return ArrayDiff(name, 0.0, 0.0, 1.0, True, tol)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if not np.array_equal(nan_a, nan_e):
        return ArrayDiff(name, math.inf, math.inf, 0.0, False, tol,
                         problem=f"NaN at {int((nan_a != nan_e).sum())} positions where the other has a number")
    both_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    mask = ~(nan_a | both_inf)
    a_m, e_m = a[mask], e[mask]
    if a_m.size == 0:
        return ArrayDiff(name, 0.0, 0.0, 1.0, True, tol)
    err = np.abs(a_m - e_m)
    max_abs = float(err.max())
    denom = np.abs(e_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, err / denom, np.where(err > 0, np.inf, 0.0))
    max_rel = float(rel.max())
    norm = float(np.linalg.norm(a_m) * np.linalg.norm(e_m))
    cosine = float(np.dot(a_m, e_m) / norm) if norm > 0 else (1.0 if max_abs == 0 else 0.0)
    ok = bool(np.all(err <= tol.atol + tol.rtol * denom))
    return ArrayDiff(name, max_abs, max_rel, cosine, ok, tol)
