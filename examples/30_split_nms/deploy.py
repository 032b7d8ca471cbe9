"""Deployment-side use of a split model: ``SplitRunner`` runs the head, then the tail.

``python deploy.py MANIFEST.json ORIGINAL.onnx`` runs a few random batches through the split parts
and through the original model and prints, per batch, the number of detections and the largest
difference between the two (0 when head then tail reproduce the original exactly).
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort

from surgery.runtime import SplitRunner


def main(manifest: str, original: str) -> None:
    runner = SplitRunner.from_manifest(manifest)  # needs only numpy and onnxruntime at run time
    reference = ort.InferenceSession(original, providers=["CPUExecutionProvider"])
    names = [o.name for o in reference.get_outputs()]
    for seed in range(4):
        images = (np.random.default_rng(seed).standard_normal((1, 3, 32, 32)) * 2).astype(
            np.float32
        )
        got = runner.run({"images": images})
        want = dict(zip(names, reference.run(None, {"images": images}), strict=True))
        diff = max(
            float(np.abs(got[n].astype(np.float64) - want[n]).max()) if want[n].size else 0.0
            for n in names
        )
        same_shapes = all(got[n].shape == want[n].shape for n in names)
        print(
            f"batch {seed}: {got['detections'].shape[0]} detections, same shapes: {same_shapes}, max abs difference {diff:.3g}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
