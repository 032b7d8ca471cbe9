"""Which onnx-surgery pass fixes what, and the order those passes run in.

This is knowledge about our own passes (not about ATC), so it lives here rather than in the data
table. ``PASS_ORDER`` is the order ``--emit-pipeline`` writes passes in: functions inlined first
(so later passes see plain ``ai.onnx`` nodes), op rewrites before the opset down-conversion (the
rewrites remove ops that have no down-adapter, e.g. opset-20 Gelu and GridSample), dtype narrowing,
then shapes made static, the split of data-dependent post-processing (sized by the folded
shapes), then rewrites that need constants folded by ``make-static`` (Gather indices), int64 narrowing once shape arithmetic is folded, cleanup, and the static gate last.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FIX_BY_OP", "FIX_NOTES", "PASS_ORDER", "USER_DECISION_PASSES", "order_passes"]

PASS_ORDER: tuple[str, ...] = (
    "inline-functions",
    "pin-inputs",
    "remove-dropout",
    "drop-maxpool-indices",
    "decompose-gelu",
    "decompose-hardswish",
    "decompose-gridsample",
    "einsum-to-matmul",
    "decompose-dft",
    "convert-opset",
    "narrow-float64",
    "fix-shapes",
    "make-static",
    "split-postprocess",
    "rewrite-focus",
    "slice-step-to-gather",
    "nearest-upsample-to-expand",
    "complete-nms-inputs",
    "normalize-gather-indices",
    "narrow-int64",
    "cleanup",
    "assert-static",
)

#: Passes that remove or rewrite a given op (unregistered or AICPU-only ones).
FIX_BY_OP: dict[str, tuple[str, ...]] = {
    "Gelu": ("decompose-gelu",),
    "Loop": ("make-static",),
    "Scan": ("make-static",),
    "GroupNormalization": ("convert-opset",),
    # ops newer than opset 18 that convert-opset decomposes on the way down (dynamo writes them)
    "Attention": ("convert-opset",),
    "RMSNormalization": ("convert-opset",),
    "RotaryEmbedding": ("convert-opset",),
    "AffineGrid": ("convert-opset",),
    "DeformConv": ("convert-opset",),
    "Einsum": ("einsum-to-matmul",),
    "DFT": ("decompose-dft",),
    "STFT": ("decompose-dft",),
    "GridSample": ("decompose-gridsample",),
    "NonZero": ("split-postprocess",),
    "Unique": ("split-postprocess",),
    "NonMaxSuppression": ("split-postprocess",),
}

#: How the pass in FIX_BY_OP deals with the op, where that needs saying.
FIX_NOTES: dict[str, str] = {
    "Loop": "make-static with unroll_loops = true unrolls a Loop whose trip count is constant (up to max_unroll "
    "iterations); a data-dependent Loop cannot run on ATC and belongs in a CPU part",
    "Scan": "make-static with unroll_loops = true unrolls a Scan whose scan length is static once the input "
    "shapes are fixed (up to max_unroll steps; the emitted pipeline allows 256, e.g. 98 frames of 1 s of 16 kHz audio)",
    "GroupNormalization": "convert-opset decomposes GroupNormalization below its opset",
    "Attention": "convert-opset decomposes Attention (opset 23) into MatMul/Softmax arithmetic",
    "RMSNormalization": "convert-opset decomposes RMSNormalization (opset 23) into primitive ops",
    "RotaryEmbedding": "convert-opset decomposes RotaryEmbedding (opset 23) into Slice/Mul/Add",
    "AffineGrid": "convert-opset decomposes AffineGrid (opset 20) into a base grid and MatMul",
    "DeformConv": "convert-opset decomposes DeformConv (opset 19) through GridSample; run decompose-gridsample "
    "after it",
    "Gelu": "decompose-gelu rewrites Gelu (exact or tanh) with primitive ops",
    "GridSample": "decompose-gridsample removes GridSample, but the GatherElements it uses is AICPU-only in the "
    "same 2022 data: measure both on the device",
    "Einsum": "einsum-to-matmul rewrites two-operand Einsum as Transpose/Reshape/MatMul (AI Core ops)",
    "DFT": "decompose-dft rewrites DFT as one MatMul by a constant twiddle matrix (needs a static signal length)",
    "STFT": "decompose-dft rewrites STFT as one strided Conv whose kernel holds the windowed twiddle factors",
}

#: Passes whose use changes the deployment itself: written commented out, for the user to decide.
USER_DECISION_PASSES: frozenset[str] = frozenset({"split-postprocess"})


def order_passes(names: Iterable[str]) -> list[str]:
    """``names`` without duplicates, in :data:`PASS_ORDER` (unknown names last, as given)."""
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    rank = {name: i for i, name in enumerate(PASS_ORDER)}
    return sorted(seen, key=lambda n: (rank.get(n, len(PASS_ORDER)), seen.index(n)))
