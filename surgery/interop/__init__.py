"""Bridges to other tools: onnx-graphsurgeon for user-written passes, onnxsim."""
