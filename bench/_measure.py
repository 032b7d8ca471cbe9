"""Run a command in a child process and report its wall time and peak RSS (ru_maxrss)."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def measure(argv: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Return (seconds, peak RSS in MiB, exit code) of ``argv`` run in a fresh child."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return seconds, usage.ru_maxrss / 1024, code


def measure_cpu(
    argv: list[str], *, env: dict[str, str] | None = None
) -> tuple[float, float, float, int]:
    """Return (wall seconds, CPU seconds user+system, peak RSS in MiB, exit code) of ``argv`` in a fresh child.

    On a shared machine the wall time of a CPU-bound phase (imports) stretches with the load while
    its CPU time does not: the CPU column says how much work the tool did, the wall column how long
    it took this time."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def row(label: str, seconds: float, rss_mib: float, code: int) -> str:
    status = "" if code == 0 else f"  FAILED (exit {code})"
    return f"{label:<44} {seconds:8.2f} s {rss_mib:10.0f} MiB{status}"
