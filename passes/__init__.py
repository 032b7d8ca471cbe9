"""The built-in pass library, installed as ``surgery.passes``: one module a pass.

Importing this package registers every built-in pass; a new pass is one line below.
"""

from __future__ import annotations
from surgery.passes import cleanup  # noqa: F401
from surgery.passes import remove_dropout  # noqa: F401
from surgery.passes import fix_shapes  # noqa: F401
from surgery.passes import pin_inputs  # noqa: F401
from surgery.passes import make_static  # noqa: F401
from surgery.passes import assert_static  # noqa: F401
from surgery.passes import extract  # noqa: F401
from surgery.passes import split_postprocess  # noqa: F401
from surgery.passes import expose  # noqa: F401
from surgery.passes import maxpool_to_avgpool  # noqa: F401
from surgery.passes import drop_maxpool_indices  # noqa: F401
from surgery.passes import decompose_gelu  # noqa: F401
from surgery.passes import gelu_approx  # noqa: F401
from surgery.passes import decompose_gridsample  # noqa: F401
from surgery.passes import decompose_hardswish  # noqa: F401
from surgery.passes import einsum_to_matmul  # noqa: F401
from surgery.passes import normalize_gather_indices  # noqa: F401
from surgery.passes import complete_nms_inputs  # noqa: F401
from surgery.passes import rewrite  # noqa: F401
from surgery.passes import narrow_float64  # noqa: F401
from surgery.passes import convert_opset  # noqa: F401
from surgery.passes import inline_functions  # noqa: F401
from surgery.passes import simplify  # noqa: F401
from surgery.passes import narrow_int64  # noqa: F401
from surgery.passes import rewrite_focus  # noqa: F401
from surgery.passes import decompose_dft  # noqa: F401
from surgery.passes import precision_plan  # noqa: F401
from surgery.passes import nearest_upsample_to_expand  # noqa: F401
from surgery.passes import slice_step_to_gather  # noqa: F401
