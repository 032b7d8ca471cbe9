"""Verification gates and instruments (see :mod:`surgery.gates.base` for the interface).

Add a gate without touching the runner::

    from surgery.gates import BaseGate, Outcome

    class NoFloat64(BaseGate):
        name = "no-float64"
        def check(self, state):
            bad = [v.name for v in state.model.graph.outputs if v.dtype == ir.DataType.DOUBLE]
            return Outcome.failed(self.name, f"float64 outputs: {bad}") if bad else Outcome.passed(self.name)

    surgery.apply(model, pipeline, gates=[NoFloat64()])
"""

from surgery.gates.base import BaseGate, BaseInstrument, Gate, Instrument, Outcome, Schedule, Status
from surgery.gates.basic import CheckerGate, OrtLoadGate
from surgery.gates.parity import ParityGate
from surgery.gates.signature import SignatureGate
from surgery.gates.state import RunState

__all__ = [
    "BUILTIN_GATES",
    "BaseGate",
    "BaseInstrument",
    "CheckerGate",
    "Gate",
    "Instrument",
    "OrtLoadGate",
    "Outcome",
    "ParityGate",
    "RunState",
    "Schedule",
    "SignatureGate",
    "Status",
]

BUILTIN_GATES = (CheckerGate, SignatureGate, OrtLoadGate, ParityGate)
"""In the order they run after each pass: the cheap structural checks first, then ORT, then parity.

They start in ``start_order`` (then this order): the signature gate starts last, so its baseline is
the original as execution corrected it (where onnx's shape inference is wrong, the parity gate's
start fixes the original's annotations from what ONNX Runtime computes).
"""
