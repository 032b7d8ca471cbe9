"""The built-in pass library, installed as ``surgery.passes``: one module a pass.

Importing this package registers every built-in pass; a new pass is one line below.
"""

from __future__ import annotations

from . import (  # relative: this folder is installed as surgery.passes
    assert_static,  # noqa: F401
    cleanup,  # noqa: F401
    complete_nms_inputs,  # noqa: F401
    convert_opset,  # noqa: F401
    decompose_dft,  # noqa: F401
    decompose_gelu,  # noqa: F401
    decompose_gridsample,  # noqa: F401
    decompose_hardswish,  # noqa: F401
    drop_maxpool_indices,  # noqa: F401
    einsum_to_matmul,  # noqa: F401
    expose,  # noqa: F401
    extract,  # noqa: F401
    fix_shapes,  # noqa: F401
    gelu_approx,  # noqa: F401
    inline_functions,  # noqa: F401
    make_static,  # noqa: F401
    maxpool_to_avgpool,  # noqa: F401
    narrow_float64,  # noqa: F401
    narrow_int64,  # noqa: F401
    nearest_upsample_to_expand,  # noqa: F401
    normalize_gather_indices,  # noqa: F401
    opset_decompositions,  # noqa: F401  (not a pass: fills convert-opset's DECOMPOSITIONS table)
    pin_inputs,  # noqa: F401
    precision_plan,  # noqa: F401
    remove_dropout,  # noqa: F401
    rewrite,  # noqa: F401
    rewrite_focus,  # noqa: F401
    simplify,  # noqa: F401
    slice_step_to_gather,  # noqa: F401
    split_postprocess,  # noqa: F401
)
