"""Apply a user-written onnx-graphsurgeon pass with the Python API (no passes.toml).

    python examples/02_graphsurgeon_pass/run.py [-o OUT.onnx]

Builds the model, runs ``[hardswish_to_hardsigmoid(), Cleanup()]`` through ``surgery.apply`` (checker,
ONNX Runtime load and parity with the original after each pass) and prints the report.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the user's pass module lives next to this script

from hardswish_pass import hardswish_to_hardsigmoid  # noqa: E402  (the pass class)
from make_model import build  # noqa: E402

import surgery  # noqa: E402
from surgery.passes.cleanup import Cleanup  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=None, help="where to save the rewritten model")
    args = parser.parse_args(argv)

    images = np.random.default_rng(0).uniform(0.0, 1.0, (1, 3, 16, 16)).astype(np.float32)
    model, report = surgery.apply(
        build(),
        [hardswish_to_hardsigmoid(), Cleanup()],
        inputs={"images": images},
        output=args.output,
    )
    for step in report.steps:
        worst = step.worst()
        print(
            f"{step.name:26s} modified={step.modified!s:5s} checker={step.checker} ort={step.ort} "
            f"parity={step.parity_status}"
            + (f" max_abs={worst.max_abs:.3g}" if worst else "")
            + f" stats={step.stats}"
        )
    ops = collections.Counter(node.op_type for node in model.graph.node)
    print("ops after:", dict(sorted(ops.items())))
    print(
        "ir_version:",
        model.ir_version,
        "opset:",
        {o.domain or "ai.onnx": o.version for o in model.opset_import},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
