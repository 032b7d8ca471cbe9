"""Instruments the runner calls around passes: checker, ORT load, parity, reproducer."""
