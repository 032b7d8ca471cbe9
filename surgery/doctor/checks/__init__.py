"""The doctor's checks: one function per check over a :class:`~surgery.doctor.context.Context`,
each returning a list of :class:`~surgery.doctor.finding.Finding`. ``CHECKS`` runs in this order."""

from __future__ import annotations

from collections.abc import Callable

from surgery.doctor.checks.aicpu import check_aicpu
from surgery.doctor.checks.data_dependent import check_data_dependent
from surgery.doctor.checks.domains import check_domains
from surgery.doctor.checks.dropout import check_dropout
from surgery.doctor.checks.dynamic import check_dynamic_dims
from surgery.doctor.checks.empty import check_empty
from surgery.doctor.checks.float64 import check_float64
from surgery.doctor.checks.gather import check_gather_negative
from surgery.doctor.checks.graph_io import check_graph_io
from surgery.doctor.checks.gridsample import check_gridsample
from surgery.doctor.checks.int64 import check_int64
from surgery.doctor.checks.layernorm import check_layernorm
from surgery.doctor.checks.maxpool_indices import check_maxpool_indices
from surgery.doctor.checks.names import check_names
from surgery.doctor.checks.nms import check_nms
from surgery.doctor.checks.opset import check_opset
from surgery.doctor.checks.pad import check_pad
from surgery.doctor.checks.pool_limits import check_pool_limits
from surgery.doctor.checks.random_ops import check_random_ops
from surgery.doctor.checks.resize import check_resize
from surgery.doctor.checks.slice import check_slice
from surgery.doctor.checks.unregistered import check_unregistered
from surgery.doctor.checks.value_if import check_value_dependent_if
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

Check = Callable[[Context], list[Finding]]

CHECKS: tuple[Check, ...] = (
    check_graph_io,
    check_domains,
    check_opset,
    check_unregistered,
    check_dynamic_dims,
    check_float64,
    check_int64,
    check_aicpu,
    check_maxpool_indices,
    check_pool_limits,
    check_dropout,
    check_random_ops,
    check_resize,
    check_gather_negative,
    check_pad,
    check_slice,
    check_nms,
    check_gridsample,
    check_layernorm,
    check_data_dependent,
    check_value_dependent_if,
    check_empty,
    check_names,
)

__all__ = ["CHECKS", "Check"]
