"""Static-shape machinery: shape specs, whole-model shape inference, folding of shape computations.

The passes ``fix-shapes``, ``pin-inputs``, ``make-static`` and ``assert-static`` and the bucket/ATC
helpers build on these modules; nothing here registers a pass.

- :mod:`surgery.shapes.dims`: the one notion of a dynamic dim (``-1``, ``?``, empty, anonymous,
  symbolic) that every module reading shapes uses.
- :mod:`surgery.shapes.spec`: parse ATC / onnxsim / Polygraphy / TOML shape specs, apply dim bindings.
- :mod:`surgery.shapes.infer`: the project's one whole-model onnx inference (per-graph tables, no
  large weights serialized), :func:`~surgery.shapes.infer.refresh_shapes` (the runner's invariant
  after every pass), shapes proven from the inputs alone (``assert-static``), per-node inference.
- :mod:`surgery.shapes.observed`: shapes ONNX Runtime computes on the original, which win over a
  wrong onnx inference (STFT), and the checker gate's tolerance of exactly those ops.
- :mod:`surgery.shapes.evaluate`: evaluate one ONNX node on constant numpy inputs.
- :mod:`surgery.shapes.fold`: one linear folding sweep (constants, ``Shape``/``Size`` of static
  tensors, ``If`` with a constant condition, ``Loop`` and ``Scan`` unrolling) with a size budget.
- :mod:`surgery.shapes.static`: what is still dynamic, and who produces it.
"""
