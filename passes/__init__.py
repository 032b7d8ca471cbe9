"""The built-in pass library, installed as ``surgery.passes``: one module a pass.

Importing this package registers every built-in pass; a new pass is one line below.
"""

from __future__ import annotations
