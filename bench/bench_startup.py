"""Start-up time of the commands a user types first, beside the interpreter alone and Polygraphy.

    python bench/bench_startup.py [--repeat 7]

Prints the best of N wall times per command (best-of filters out a busy machine's noise). Target:
``surgery --help``, ``surgery passes list`` and ``surgery passes show X`` within 0.2 s of the
interpreter's own start.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time


def best_of(argv: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    rows = [
        ("python -c pass", [py, "-c", "pass"]),
        ("surgery --help", [py, "-m", "surgery", "--help"]),
        ("surgery passes list", [py, "-m", "surgery", "passes", "list"]),
        ("surgery passes show make-static", [py, "-m", "surgery", "passes", "show", "make-static"]),
        ("surgery apply --help", [py, "-m", "surgery", "apply", "--help"]),
        ("python -c 'import onnx_ir'", [py, "-c", "import onnx_ir"]),
        ("python -c 'import onnxruntime'", [py, "-c", "import onnxruntime"]),
    ]
    polygraphy = shutil.which("polygraphy")
    if polygraphy:
        rows.append(("polygraphy --help", [polygraphy, "--help"]))
    base = None
    print(f"{'command':40s} {'best s':>8s} {'- python':>9s}")
    for label, argv in rows:
        t = best_of(argv, args.repeat)
        base = t if base is None else base
        print(f"{label:40s} {t:8.3f} {t - base:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
