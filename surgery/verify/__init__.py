"""Verification: generating inputs, running models (ORT and the reference evaluator), comparing."""
