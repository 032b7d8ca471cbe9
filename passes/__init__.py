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
