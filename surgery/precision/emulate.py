"""Emulate what ATC's float16 precision modes compute, beside the float32 reference, node by node.

Design: the model is swept once per sample in topological order, one node at a time. Each node runs
in a single-node ONNX Runtime session (built once, cached for every sample and every re-check of a
plan), twice: on the float32 reference values and on the emulated values. A node the mode lowers to
float16 gets its float inputs (activations *and* weights) rounded to float16 and its float outputs
rounded to float16 (|x| > 65504 becomes inf, as on the device). The arithmetic between those
roundings is float32, which is what Ascend's Cube unit does for Conv/MatMul/Gemm (float16 in, float32
accumulate, float16 out); for vector reductions it is optimistic (a device that accumulates a long sum
in float16 loses more), so an overflow reported here is real, and a pass here is a lower bound.

Why this and not "convert a copy to float16 and run it": ORT's CPU float16 kernels are incomplete
(many ops have none) and their accumulation is ORT's choice, not the mode's; a converted copy also
cannot say which node overflowed first. Node-by-node also streams: a value is freed after its last
consumer, so only the live frontier of both runs is in memory, and per tensor only statistics are
kept. The cost is one session per node (created once) and two runs per node per sample.

Modes: ``fp16`` lowers every node; ``origin`` none; ``mixed_float16`` lowers the Cube ops, keeps a
precision-sensitive set (exp/log/pow/sqrt, reductions, norms, softmax, division) in float32 and lets the
other ops follow their inputs. That set approximates ATC's own mixed-precision lists, which differ by
release (``--modify_mixlist`` changes them): read a mixed_float16 result as indicative.

Nodes with subgraphs (If/Loop/Scan) run whole in float32 with their outer-scope values passed in;
their float outputs are rounded when the mode lowers the node. Model-local functions run as one node.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from surgery.errors import InputError
from surgery.pass_base import Tolerance

__all__ = [
    "CUBE_OPS",
    "DEFAULT_TOLERANCE",
    "FP16_MAX",
    "FP16_TINY",
    "Emulation",
    "Emulator",
    "Mode",
    "TensorStats",
]


#: Largest finite float16; anything larger in magnitude rounds to inf.
FP16_MAX = 65504.0
#: Smallest positive normal float16; below it values lose precision (subnormal) and under 2**-25 flush to 0.
FP16_TINY = float(np.finfo(np.float16).tiny)

#: float16 keeps ~3 significant digits: 1% of the output's range (plus a small floor) is what it can promise.
DEFAULT_TOLERANCE = Tolerance(rtol=1e-2, atol=1e-3)

#: Ops on the Cube unit: float16 inputs, float32 accumulation, float16 output (the ATC white list).
CUBE_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "ConvInteger", "Einsum"}
)
#: Ops mixed_float16 keeps in float32 (the precision-sensitive "black list": exp/log/reductions/norms).
_MIXED_FP32_OPS = frozenset(
    {
        "Exp",
        "Log",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Softmax",
        "LogSoftmax",
        "ReduceSum",
        "ReduceMean",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceL1",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceProd",
        "LayerNormalization",
        "RMSNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "LpNormalization",
        "Erf",
        "Div",
        "CumSum",
        "Softplus",
        "Tanh",
        "Sigmoid",
    }
)
_FLOAT = np.float32


class Mode(str, enum.Enum):
    """ATC's precision modes, by their ``--precision_mode_v2`` names."""

    FP16 = "fp16"
    """Every op that has a float16 kernel runs in float16 (``--precision_mode=force_fp16``, the default)."""
    MIXED_FLOAT16 = "mixed_float16"
    """Cube ops in float16; precision-sensitive ops in float32; others follow their inputs."""
    ORIGIN = "origin"
    """Every op in its original dtype (``must_keep_origin_dtype``)."""

    @property
    def v1(self) -> str:
        """The older ``--precision_mode`` value for the same behaviour."""
        return {
            "fp16": "force_fp16",
            "mixed_float16": "allow_mix_precision_fp16",
            "origin": "must_keep_origin_dtype",
        }[self.value]

    @classmethod
    def parse(cls, text: str) -> Mode:
        aliases = {
            "force_fp16": "fp16",
            "allow_mix_precision": "mixed_float16",
            "allow_mix_precision_fp16": "mixed_float16",
            "must_keep_origin_dtype": "origin",
        }
        try:
            return cls(aliases.get(text, text))
        except ValueError:
            raise InputError(
                f"unknown precision mode {text!r}; expected fp16, mixed_float16 or origin"
            ) from None


@dataclasses.dataclass
class TensorStats:
    """Worst figures over all samples for one float tensor: reference vs emulated."""

    name: str
    node: str
    op: str
    index: int
    """The producing node's position in topological order."""
    in_fp16: bool = False
    ref_absmax: float = 0.0
    max_abs_err: float = 0.0
    overflow_absmax: float = 0.0
    """Largest |x| above 65504 in the node's float32 result before rounding to float16 (0 when none)."""
    input_overflow: str = ""
    """A float32 input that overflowed when rounded to float16 for this node (a kept producer's output)."""
    input_flush: str = ""
    """An input (often a weight) whose nonzero values all became 0 when rounded to float16 for this node."""
    flushed: int = 0
    nonzero: int = 0
    nonfinite: int = 0
    """Emulated non-finite values where the reference is finite."""
    mismatched: int = 0
    """For a non-float tensor (indices, masks, argmax): elements that differ from the reference."""

    def allowed(self, tol: Tolerance) -> float:
        return tol.atol + tol.rtol * self.ref_absmax

    def breaks(self, tol: Tolerance) -> bool:
        return (
            self.nonfinite > 0 or self.mismatched > 0 or not (self.max_abs_err <= self.allowed(tol))
        )

    def how_far(self, tol: Tolerance) -> float:
        """Error over what the tolerance allows (> 1 breaks it); inf when values went non-finite."""
        if self.nonfinite or self.mismatched:
            return float("inf")
        return self.max_abs_err / self.allowed(tol)

    @property
    def overflows(self) -> bool:
        return self.overflow_absmax > 0 or bool(self.input_overflow)

    @property
    def flush_fraction(self) -> float:
        return self.flushed / self.nonzero if self.nonzero else 0.0

    def to_dict(self, tol: Tolerance) -> dict:
        return {
            "tensor": self.name,
            "node": self.node,
            "op": self.op,
            "fp16": self.in_fp16,
            "ref_absmax": _finite(self.ref_absmax),
            "max_abs_err": _finite(self.max_abs_err),
            "how_far": _finite(self.how_far(tol)),
            "overflow_absmax": _finite(self.overflow_absmax),
            "input_overflow": self.input_overflow,
            "input_flush": self.input_flush,
            "flushed": self.flushed,
            "nonzero": self.nonzero,
            "nonfinite": self.nonfinite,
            "mismatched": self.mismatched,
        }


def _finite(x: float) -> float | str:
    return float(x) if np.isfinite(x) else str(x)


@dataclasses.dataclass
class Emulation:
    """One emulated run (all samples) of a mode with a set of nodes kept in float32."""

    mode: Mode
    tolerance: Tolerance
    keep: frozenset[str]
    outputs: dict[str, TensorStats]
    """Per graph output."""
    overflows: list[TensorStats]
    flushes: list[TensorStats]
    first_break: TensorStats | None
    """The first tensor, in topological order, whose error passes tolerance."""
    ranked: list[TensorStats]
    """Every float tensor, in topological order."""
    fp16_nodes: int
    samples: int

    @property
    def ok(self) -> bool:
        """Every output within tolerance and no tensor overflowed float16 anywhere.

        An overflow fails even when the outputs still look close: the device computes inf there, and
        what hides it (a residual add, a norm dividing by inf to give 0) is luck of this model and
        these samples, not float16 being safe.
        """
        return not self.overflows and self.outputs_ok

    @property
    def outputs_ok(self) -> bool:
        return not any(s.breaks(self.tolerance) for s in self.outputs.values())

    def to_dict(self) -> dict:
        tol = self.tolerance
        return {
            "mode": self.mode.value,
            "ok": self.ok,
            "outputs_ok": self.outputs_ok,
            "keep": sorted(self.keep),
            "fp16_nodes": self.fp16_nodes,
            "samples": self.samples,
            "tolerance": {"rtol": tol.rtol, "atol": tol.atol},
            "outputs": {k: v.to_dict(tol) for k, v in self.outputs.items()},
            "overflows": [s.to_dict(tol) for s in self.overflows],
            "flushes": [s.to_dict(tol) for s in self.flushes],
            "first_break": self.first_break.to_dict(tol) if self.first_break else None,
        }


def _round16(array: np.ndarray) -> np.ndarray:
    """float32 → float16 → float32: the value a float16 tensor holds (inf beyond 65504)."""
    with np.errstate(over="ignore"):
        return array.astype(np.float16).astype(_FLOAT)


def _is_float32(array: np.ndarray) -> bool:
    return array.dtype == np.float32


def _subgraphs(node: ir.Node) -> Iterable[ir.Graph]:
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.as_graphs()


def _free_names(graph: ir.Graph) -> set[str]:
    """Names a subgraph reads from the enclosing scope (recursively)."""
    defined = {v.name for v in graph.inputs} | set(graph.initializers)
    used: set[str] = set()
    for node in graph:
        for v in node.inputs:
            if v is not None and v.name:
                used.add(v.name)
        for sub in _subgraphs(node):
            used |= _free_names(sub)
        defined |= {o.name for o in node.outputs if o.name}
    return used - defined


def _topological(graph: ir.Graph) -> list[ir.Node]:
    """The graph's nodes in an order where every producer comes first (Kahn; the file's order when valid)."""
    nodes = list(graph)
    produced = {id(o): i for i, n in enumerate(nodes) for o in n.outputs}
    deps: list[set[int]] = []
    for node in nodes:
        reads = [v for v in node.inputs if v is not None]
        for sub in _subgraphs(node):
            names = _free_names(sub)
            reads += [o for n in nodes for o in n.outputs if o.name in names]
        deps.append({produced[id(v)] for v in reads if id(v) in produced})
    if all(all(d < i for d in ds) for i, ds in enumerate(deps)):
        return nodes
    users: list[list[int]] = [[] for _ in nodes]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    waiting = [len(ds) for ds in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise InputError("precision: the graph has a cycle")
    return [nodes[i] for i in order]


class _NodeRunner:
    """A single-node ORT session over one node (plus the outer-scope names its subgraphs read)."""

    def __init__(self, model: ir.Model, node: ir.Node, extra: Sequence[str]) -> None:
        self.node = node
        self.inputs = [v.name if v is not None else "" for v in node.inputs]
        self.extra = list(extra)
        self.outputs = [o.name for o in node.outputs]
        self._model = model
        self._session: ort.InferenceSession | None = None

    def _build(self, feeds: Mapping[str, np.ndarray]) -> ort.InferenceSession:
        from onnx import helper

        proto = ir.serde.serialize_node(self.node)
        names = list(dict.fromkeys([n for n in self.inputs if n] + self.extra))
        inputs = [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), None)
            for n in names
        ]
        outputs = [onnx.ValueInfoProto(name=n) for n in self.outputs if n]
        graph = helper.make_graph([proto], "node", inputs, outputs)
        opsets = [helper.make_opsetid(d, v) for d, v in self._model.opset_imports.items()]
        functions = [ir.serde.serialize_function(f) for f in self._model.functions.values()]
        m = helper.make_model(graph, opset_imports=opsets, functions=functions)
        m.ir_version = max(self._model.ir_version or 8, 8)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        return ort.InferenceSession(
            m.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray | None]:
        if self._session is None:
            self._session = self._build(feeds)
        wanted = [n for n in self.outputs if n]
        given = {n: feeds[n] for n in dict.fromkeys([n for n in self.inputs if n] + self.extra)}
        got = dict(zip(wanted, self._session.run(wanted, given), strict=True))
        return [got.get(n) if n else None for n in self.outputs]


class Emulator:
    """Runs a model under a precision mode beside its float32 reference; reusable across plans."""

    def __init__(
        self,
        model: ir.Model,
        samples: Sequence[Mapping[str, np.ndarray]],
        *,
        mode: Mode = Mode.FP16,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
    ) -> None:
        if not samples:
            raise InputError("precision: at least one input sample is needed")
        self.model = model
        self.samples = [dict(s) for s in samples]
        self.mode = mode
        self.tolerance = tolerance
        graph = model.graph
        self.nodes: list[ir.Node] = _topological(graph)
        self._runners: dict[int, _NodeRunner] = {}
        self._extra: dict[int, list[str]] = {}
        uses: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            free: set[str] = set()
            for sub in _subgraphs(node):
                free |= _free_names(sub)
            self._extra[i] = sorted(free)
            for name in {v.name for v in node.inputs if v is not None and v.name} | free:
                uses[name] = uses.get(name, 0) + 1
        self._uses = uses
        self._outputs = [v.name or "" for v in graph.outputs]
        self._inits = dict(graph.initializers.items())
        self.peak_live = 0
        """Most tensors held at once by a sweep (both runs): the streaming bound, for tests and -v logs."""
        self.labels = [
            node.name or f"<{node.op_type} -> {node.outputs[0].name}>" for node in self.nodes
        ]

    # -- what the mode lowers ---------------------------------------------------------------
    def fp16_set(self, keep: Iterable[str] = ()) -> list[bool]:
        """Per node: does the mode (with ``keep`` held in float32) compute it in float16?"""
        kept = set(keep)
        if self.mode is Mode.ORIGIN:
            return [False] * len(self.nodes)
        lowered: list[bool] = []
        fp16_values: set[str] = set()
        for label, node in zip(self.labels, self.nodes, strict=True):
            if label in kept:
                low = False
            elif self.mode is Mode.FP16 or node.op_type in CUBE_OPS:
                low = True
            elif node.op_type in _MIXED_FP32_OPS:
                low = False
            else:  # gray: float16 when a non-constant input already is
                low = any(v is not None and v.name in fp16_values for v in node.inputs)
            lowered.append(low)
            if low:
                fp16_values.update(o.name for o in node.outputs if o.name)
        return lowered

    # -- the sweep ----------------------------------------------------------------------------
    def _runner(self, i: int) -> _NodeRunner:
        runner = self._runners.get(i)
        if runner is None:
            runner = self._runners[i] = _NodeRunner(self.model, self.nodes[i], self._extra[i])
        return runner

    def _value(self, name: str, env: Mapping[str, np.ndarray]) -> np.ndarray:
        if name in env:
            return env[name]
        init = self._inits.get(name)
        if init is not None and init.const_value is not None:
            return init.const_value.numpy()
        raise InputError(f"precision: no value for tensor '{name}' (is it an input of the model?)")

    def run(
        self, keep: Iterable[str] = (), *, on_node: Callable[[int], None] | None = None
    ) -> Emulation:
        keep = frozenset(keep)
        lowered = self.fp16_set(keep)
        stats: dict[str, TensorStats] = {}
        for sample in self.samples:
            self._sweep(sample, lowered, stats, on_node)
        tol = self.tolerance
        ordered = sorted(stats.values(), key=lambda s: s.index)
        outputs = {name: stats[name] for name in self._outputs if name in stats}
        for name in self._outputs:
            if (
                name not in outputs
            ):  # a non-float output equal to the reference, or an input passed through
                outputs[name] = TensorStats(name, "", "exact", -1)
        return Emulation(
            mode=self.mode,
            tolerance=tol,
            keep=keep,
            outputs=outputs,
            overflows=[s for s in ordered if s.overflows],
            flushes=[
                s
                for s in ordered
                if s.input_flush
                or s.flush_fraction >= 0.01
                or (s.nonzero and s.flushed == s.nonzero)
            ],
            first_break=next((s for s in ordered if s.breaks(tol)), None),
            ranked=ordered,
            fp16_nodes=sum(lowered),
            samples=len(self.samples),
        )

    def _sweep(
        self,
        sample: Mapping[str, np.ndarray],
        lowered: Sequence[bool],
        stats: dict[str, TensorStats],
        on_node: Callable[[int], None] | None,
    ) -> None:
        ref: dict[str, np.ndarray] = {}
        emu: dict[str, np.ndarray] = {}
        for v in self.model.graph.inputs:
            vname = v.name or ""
            if vname in sample:
                array = np.asarray(sample[vname])
                if (
                    v.dtype is not None
                    and array.dtype.kind == "f"
                    and v.dtype.numpy() != array.dtype
                ):
                    array = array.astype(v.dtype.numpy())
                ref[vname] = emu[vname] = array
            elif vname not in self._inits:
                raise InputError(f"precision: no sample value for input '{vname}'")
        remaining = dict(self._uses)
        keep_alive = set(self._outputs)
        for i, node in enumerate(self.nodes):
            runner = self._runner(i)
            names = list(dict.fromkeys([n for n in runner.inputs if n] + runner.extra))
            ref_feeds = {n: self._value(n, ref) for n in names}
            emu_feeds = {n: self._value(n, emu) for n in names}
            input_overflow = input_flush = ""
            if lowered[i]:
                for n, a in emu_feeds.items():
                    if _is_float32(a):
                        rounded = _round16(a)
                        if (
                            not input_overflow
                            and np.isfinite(a).all()
                            and not np.isfinite(rounded).all()
                        ):
                            input_overflow = n
                        if not input_flush and a.size and np.any(a) and not np.any(rounded):
                            input_flush = n
                        emu_feeds[n] = rounded
            try:
                ref_out = runner.run(ref_feeds)
                emu_out = runner.run(emu_feeds)
            except Exception as exc:  # noqa: BLE001 - ORT raises its own types; one line names the node
                raise InputError(
                    f"precision: node '{self.labels[i]}' ({node.op_type}) cannot run in ONNX "
                    f"Runtime: {str(exc).splitlines()[0]}"
                ) from None
            for out, r, e in zip(node.outputs, ref_out, emu_out, strict=False):
                oname = out.name or ""
                if r is None or e is None:
                    continue
                if lowered[i] and _is_float32(e):
                    pre = e
                    e = _round16(e)
                    self._record(
                        stats, oname, i, node, True, r, pre, e, input_overflow, input_flush
                    )
                elif _is_float32(r):
                    self._record(
                        stats, oname, i, node, lowered[i], r, e, e, input_overflow, input_flush
                    )
                elif r.shape != e.shape or not np.array_equal(r, e):
                    s = stats.get(oname)
                    if s is None:
                        s = stats[oname] = TensorStats(
                            oname, self.labels[i], node.op_type, i, in_fp16=lowered[i]
                        )
                    s.mismatched += int(r.size if r.shape != e.shape else np.count_nonzero(r != e))
                ref[oname] = r
                emu[oname] = e
            for n in names:
                remaining[n] -= 1
                if remaining[n] == 0 and n not in keep_alive:
                    ref.pop(n, None)
                    emu.pop(n, None)
            for out in node.outputs:  # never read: free at once
                if out.name and not self._uses.get(out.name) and out.name not in keep_alive:
                    ref.pop(out.name, None)
                    emu.pop(out.name, None)
            self.peak_live = max(self.peak_live, len(ref) + len(emu))
            if on_node is not None:
                on_node(i)

    def _record(
        self,
        stats: dict[str, TensorStats],
        name: str,
        i: int,
        node: ir.Node,
        fp16: bool,
        ref: np.ndarray,
        pre: np.ndarray,
        emu: np.ndarray,
        input_overflow: str,
        input_flush: str = "",
    ) -> None:
        s = stats.get(name)
        if s is None:
            s = stats[name] = TensorStats(name, self.labels[i], node.op_type, i, in_fp16=fp16)
        if ref.size == 0:
            return
        r = ref.astype(np.float64, copy=False)
        finite_ref = np.isfinite(r)
        s.ref_absmax = max(s.ref_absmax, float(np.abs(r[finite_ref]).max(initial=0.0)))
        e = emu.astype(np.float64, copy=False)
        bad = finite_ref & ~np.isfinite(e)
        s.nonfinite += int(bad.sum())
        both = finite_ref & np.isfinite(e)
        if both.any():
            s.max_abs_err = max(s.max_abs_err, float(np.abs(e[both] - r[both]).max()))
        if fp16:
            p = np.abs(pre.astype(np.float64, copy=False))
            finite_pre = np.isfinite(p)
            over = p[finite_pre & (p > FP16_MAX)]
            if over.size:
                s.overflow_absmax = max(s.overflow_absmax, float(over.max()))
            nz = finite_pre & (p > 0)
            s.nonzero += int(nz.sum())
            s.flushed += int((nz & (emu == 0)).sum())
        if input_overflow and not s.input_overflow:
            s.input_overflow = input_overflow
        if input_flush and not s.input_flush:
            s.input_flush = input_flush
