"""The second oracle: onnx's ``ReferenceEvaluator`` for models ONNX Runtime has no kernel for.

ORT on CPU lacks e.g. float64 Conv, AveragePool and Erf; the reference evaluator runs every
standard op (about 10x slower). It needs the whole model in memory, so it is used only when ORT
cannot run a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from surgery.errors import SurgeryError

__all__ = ["run_reference", "REFERENCE_LIMIT"]

logger = logging.getLogger(__name__)

#: Largest model (initializer bytes) the reference evaluator is asked to run.
REFERENCE_LIMIT = 1 << 30


def run_reference(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` with ``onnx.reference.ReferenceEvaluator``; returns outputs by name."""
    from onnx.reference import ReferenceEvaluator

    from surgery.model_io import initializer_bytes

    size = initializer_bytes(model)
    if size > REFERENCE_LIMIT:
        raise SurgeryError(
            f"the reference evaluator cannot run a model with {size / 2**30:.1f} GiB of weights"
        )
    proto = ir.to_proto(model)
    evaluator = ReferenceEvaluator(proto)
    from surgery.verify.ort import cast_feed

    types = {v.name: v.dtype.numpy() if v.dtype is not None else None for v in model.graph.inputs}
    usable = {k: cast_feed(v, types.get(k)) for k, v in feeds.items() if k in types}
    outputs = evaluator.run(None, usable)
    return {o.name: np.asarray(v) for o, v in zip(proto.graph.output, outputs)}
