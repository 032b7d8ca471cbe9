"""Moved: the test helpers live in ``surgery.testing`` (import them from there).

Tests run with ``--import-mode=importlib`` and the ``tests/`` folder is not on ``sys.path`` (a
``tests/surgery/`` folder on the path would shadow the real package), so ``import helpers`` fails:
write ``from surgery.testing import make_model, vi, ort_run, op_counts, node_names, assert_close``.
"""
