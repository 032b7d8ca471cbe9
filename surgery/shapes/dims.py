"""One notion of a dynamic dim, for every module that reads shapes.

A dim is *known* when it is a concrete size: a non-negative integer. Everything else is dynamic:

- a symbolic dim (``batch``, ``seq_len``, or onnx inference's invented ``unk__3``);
- an anonymous dim (``ir.SymbolicDim(None)``: no ``dim_value`` and no ``dim_param``);
- a literal negative size: Paddle and some TensorFlow converters write an unknown dim as
  ``dim_value: -1``, which onnx-ir reads back as the *integer* ``-1`` (so ``isinstance(d, int)``
  is not a test of staticness: it crashed feed generation with "negative dimensions are not
  allowed" and made ``check`` and ``doctor`` call such a model static);
- in the plain-Python form the doctor and reports use (``int | str | None``): ``None``, an empty
  string or ``"?"``.

``0`` is a size: the ONNX IR spec allows empty tensors and ONNX Runtime enforces a declared 0
(only a *Reshape shape input* gives 0 the meaning "copy this dim", which is about values, not
annotations). In user shape specs (ATC ``--input_shape``, onnxsim, Polygraphy) ``-1`` means
"keep this dim as the model has it" (:mod:`surgery.shapes.spec`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:  # light at import: the CLI's fast commands use these helpers
    import onnx_ir as ir

__all__ = [
    "count_dynamic_dims",
    "dim_name",
    "dim_text",
    "dynamic_axes",
    "is_dynamic_dim",
    "is_known_dim",
    "is_static_shape",
    "plain_dims",
    "shape_text",
]

_ANONYMOUS = ("", "?")


def is_known_dim(dim: Any) -> TypeGuard[int]:
    """A concrete size (``0`` included); ``-1``, ``None``, ``"?"`` and symbolic dims are not."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def is_dynamic_dim(dim: Any) -> bool:
    return not is_known_dim(dim)


def is_static_shape(shape: ir.Shape | Iterable[Any] | None) -> TypeGuard[Sequence[int]]:
    """A known rank and every dim known (a scalar's empty shape is static).

    For type checkers, a static shape is a sequence of ints (``int(d)`` and arithmetic need no cast).
    """
    return shape is not None and all(is_known_dim(d) for d in shape)


def dynamic_axes(shape: ir.Shape | Iterable[Any] | None) -> list[int]:
    """Indices of the dynamic dims of ``shape`` (empty for an unknown rank: see callers)."""
    if shape is None:
        return []
    return [i for i, d in enumerate(shape) if not is_known_dim(d)]


def count_dynamic_dims(shape: ir.Shape | Iterable[Any] | None) -> int:
    """Dynamic dims of one shape (an unknown rank counts as none: it has no dims to count)."""
    return len(dynamic_axes(shape))


def dim_name(dim: Any) -> str | None:
    """The symbolic name of a dynamic dim, or None (known, anonymous, ``-1``, ``?``, onnx's ``unk__N``)."""
    if is_known_dim(dim) or dim is None or isinstance(dim, int):
        return None
    value = getattr(dim, "value", dim)  # an ir.SymbolicDim, or a plain name
    if not isinstance(value, str) or value in _ANONYMOUS or value.startswith("unk__"):
        return None
    return value


def dim_text(dim: Any) -> str:
    """``3``, ``batch`` or ``?`` (every anonymous form, ``-1`` included)."""
    if is_known_dim(dim):
        return str(int(dim))
    return dim_name(dim) or "?"


def shape_text(shape: ir.Shape | Iterable[Any] | None, *, sep: str = ", ") -> str:
    """``[1, batch, ?]``; ``unknown rank`` when the rank is not known."""
    if shape is None:
        return "unknown rank"
    return "[" + sep.join(dim_text(d) for d in shape) + "]"


def plain_dims(shape: ir.Shape | Iterable[Any] | None) -> tuple[int | str | None, ...] | None:
    """``(1, "batch", None)``: sizes as ints, names as strings, every anonymous dim as None."""
    if shape is None:
        return None
    return tuple(int(d) if is_known_dim(d) else dim_name(d) for d in shape)


def graph_dynamic_dims(graph: Any) -> int:
    """Dynamic dims over the typed values of one graph or function: its inputs, outputs and node
    outputs, each value once (subgraphs are graphs of their own: see :func:`dynamic_dims`)."""
    count = 0
    seen: set[Any] = set()
    for values in ([*graph.inputs, *graph.outputs], *(node.outputs for node in graph)):
        for v in values:
            shape = v.shape
            if shape is None or v in seen:
                continue
            seen.add(v)
            count += count_dynamic_dims(shape)
    return count


def dynamic_dims(model: ir.Model) -> int:
    """Number of non-constant dims (symbolic or unknown) over all typed values of all graphs."""
    from surgery.graph import iter_graphs

    return sum(graph_dynamic_dims(graph) for graph in iter_graphs(model, functions=False))
