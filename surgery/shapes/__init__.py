"""Static-shape machinery: shape specs, whole-model shape inference, folding of shape computations.

The passes ``fix-shapes``, ``pin-inputs``, ``make-static`` and ``assert-static`` and the bucket/ATC
helpers build on these modules; nothing here registers a pass.

- :mod:`surgery.shapes.spec`: parse ATC / onnxsim / Polygraphy / TOML shape specs, apply dim bindings.
- :mod:`surgery.shapes.infer`: onnx shape inference without serializing large weights, rebuilding
  every annotation from scratch, and per-node inference.
- :mod:`surgery.shapes.evaluate`: evaluate one ONNX node on constant numpy inputs.
- :mod:`surgery.shapes.fold`: one linear folding sweep (constants, ``Shape``/``Size`` of static
  tensors, ``If`` with a constant condition, ``Loop`` unrolling) with a size budget.
- :mod:`surgery.shapes.static`: what is still dynamic, and who produces it.
"""
