"""The real-model zoo: every model through the user's path, judged by independent checks.

    python bench/zoo/run.py [--subset ci|all] [--only NAME ...] [--jobs N] [--json OUT.json]
                            [--markdown OUT.md] [--cache DIR] [--path apply|prepare] [--keep-peers] [--render]

For each model of ``models.toml`` (transformers exports, ONNX files shipped in PyPI wheels,
torch detectors with NMS) the zoo does what a deployment engineer does:

1. ``surgery doctor MODEL --emit-pipeline pipeline.toml --input-shape SHAPES`` (the shapes are
   the user's decision, written in the table), then the user's other decisions (``pins`` become a
   ``pin-inputs`` pass in front of the emitted pipeline);
2. ``surgery apply pipeline.toml MODEL -o out.onnx`` (parity samples from the table's feeds);
3. independent checks that do not import ``surgery`` (``checks.py``): the full onnx checker, an
   ONNX Runtime load, static after ``onnx.shape_inference.infer_shapes(data_prop=True)``, no
   If/Loop/Scan, opset <= 18, no float64, parity with the original on a second, fresh sample,
   the node count; then ``surgery doctor out.onnx`` must find nothing that will fail, and
   OpenVINO's ``convert_model`` must see no dynamic dim and compute what ONNX Runtime computes.
   When the pipeline split data-dependent post-processing off (``split-postprocess``: NMS), the
   head ``out.onnx`` is what the compiler gets and is judged by all of these, while parity runs
   the head and then the CPU tail ``out.tail.onnx`` against the original;
4. the same static-readiness checks on what onnxsim, onnxslim and Polygraphy make of the
   original with the same input shapes.

With ``--path prepare``, steps 1 and 2 are the one command ``surgery prepare MODEL -o out.onnx
--input-shape SHAPES --pin NAME=VALUE --data sample1.npz`` instead; the checks are the same.

Each model runs in its own child process with the table's timeout, so a crash or a hang is a
failed row, never a lost table. The original models are made or fetched once into the cache
(default ``~/.cache/onnx-surgery-zoo``); every run redoes steps 1–4.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np

HERE = Path(__file__).resolve().parent
TABLE = HERE / "models.toml"
DEFAULT_CACHE = Path(
    os.environ.get("ONNX_SURGERY_ZOO_CACHE", Path.home() / ".cache" / "onnx-surgery-zoo")
)
SURGERY_CHECKS = (
    "apply",
    "checker",
    "ort",
    "static",
    "no_cf",
    "opset",
    "no_f64",
    "parity",
    "doctor",
    "ov_static",
    "ov_match",
)
PEER_CHECKS = ("checker", "ort", "static", "no_cf", "opset", "no_f64", "parity")
#: ``--path prepare`` (set for the child processes): ``surgery prepare`` instead of doctor + apply.
PATH_ENV = "ONNX_SURGERY_ZOO_PATH"
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore",
}


# ----------------------------------------------------------------------------------------------- table


def load_table(path: Path = TABLE) -> list[dict[str, Any]]:
    """The zoo's rows: each ``[[hf]]`` entry becomes one row per exporter."""
    with open(path, "rb") as handle:
        table = tomllib.load(handle)
    defaults = table.get("defaults", {})
    rows: list[dict[str, Any]] = []
    for entry in table.get("hf", []):
        for exporter in entry.get("exporters", ["legacy", "dynamo"]):
            row = {
                **defaults,
                **entry,
                "kind": "hf",
                "exporter": exporter,
                "name": f"{entry['arch']}-{exporter}",
                "source": f"transformers {entry['arch']} ({exporter})",
            }
            row["ci"] = exporter in entry.get("ci", [])
            rows.append(row)
    for entry in table.get("wheel", []):
        rows.append(
            {
                **defaults,
                **entry,
                "kind": "wheel",
                "source": f"{entry['package']}=={entry['version']} ({entry['publisher']})",
                "ci": bool(entry.get("ci", False)),
            }
        )
    for entry in table.get("detector", []):
        for exporter in entry.get("exporters", ["legacy", "dynamo"]):
            rows.append(
                {
                    **defaults,
                    **entry,
                    "kind": "detector",
                    "exporter": exporter,
                    "name": f"{entry['name']}-{exporter}",
                    "source": f"torch detector + NMS ({exporter})",
                    "ci": exporter in entry.get("ci", []),
                }
            )
    for row in rows:  # nodes_note: one text, or one per exporter ({ dynamo = "..." })
        note = row.get("nodes_note")
        if isinstance(note, dict):
            note = note.get(row.get("exporter", ""))
        if note:
            row["nodes_note"] = str(note)
        else:
            row.pop("nodes_note", None)
    names = [r["name"] for r in rows]
    duplicate = {n for n in names if names.count(n) > 1}
    if duplicate:
        raise SystemExit(f"models.toml: duplicate model name(s) {sorted(duplicate)}")
    return rows


# ----------------------------------------------------------------------------------------------- samples


def parse_shapes(text: str) -> dict[str, list[int]]:
    sys.path.insert(0, str(HERE))
    from peers import parse_shapes as parse

    return parse(text)


_NP = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
}


def make_sample(model_path: Path, entry: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """One sample for every graph input, shaped by the table's ``input_shape`` and filled by its
    ``feeds`` (``value`` for a constant, ``low``/``high`` for a uniform range); pinned inputs
    get their pinned value."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    shapes = parse_shapes(entry.get("input_shape", ""))
    feeds = entry.get("feeds", {})
    pins = entry.get("pins", {})
    rng = np.random.default_rng(seed)
    sample: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dtype = _NP.get(value.type.tensor_type.elem_type)
        if dtype is None:
            raise ValueError(
                f"input {value.name!r}: unsupported element type {value.type.tensor_type.elem_type}"
            )
        if value.name in pins:
            sample[value.name] = np.asarray(pins[value.name], dtype=dtype)
            continue
        if value.name in shapes:
            shape = shapes[value.name]
        else:
            dims = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in value.type.tensor_type.shape.dim
            ]
            if None in dims:
                raise ValueError(
                    f"input {value.name!r} is dynamic and models.toml gives it no shape"
                )
            shape = dims
        spec = feeds.get(value.name, {})
        if "value" in spec:
            array = np.full(shape, spec["value"], dtype=dtype)
        elif np.issubdtype(dtype, np.integer):
            array = rng.integers(spec.get("low", 0), spec.get("high", 10), size=shape).astype(dtype)
        elif dtype == np.bool_:
            array = rng.integers(0, 2, size=shape).astype(bool)
        elif "low" in spec:
            array = rng.uniform(spec["low"], spec["high"], size=shape).astype(dtype)
        else:
            array = (rng.standard_normal(size=shape) * spec.get("scale", 1.0)).astype(dtype)
        sample[value.name] = array
    return sample


# ----------------------------------------------------------------------------------------------- one model


def _surgery(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    # run outside the checkout, as a user would (``-m surgery`` there would import the source tree)
    return subprocess.run(
        [sys.executable, "-m", "surgery", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **CHILD_ENV},
        cwd=str(Path.home()),
    )


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:240] if lines else ""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def user_pipeline(emitted: str, entry: dict[str, Any]) -> str:
    """The doctor's pipeline plus the user's decisions of the table: pinned inputs first."""
    pins = entry.get("pins", {})
    if not pins:
        return emitted
    block = (
        '\n# the user\'s decision (bench/zoo/models.toml): pin inputs\n[[pass]]\nname = "pin-inputs"\n'
        f"values = {_toml_value(pins)}\n"
    )
    marker = "schema_version = 1\n"
    if marker not in emitted:
        return block + emitted
    head, _, tail = emitted.partition(marker)
    return head + marker + block + tail


def _doctor_clean(path: Path, timeout: float) -> tuple[bool, str]:
    proc = _surgery(["doctor", str(path), "--report", "-"], timeout)
    if proc.returncode not in (0, 1):
        return False, f"doctor exit {proc.returncode}: {_last_line(proc.stderr)}"
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return False, f"doctor exit {proc.returncode}: no JSON"
    failing = [f for f in report.get("findings", []) if f.get("severity") == "will-fail"]
    if failing:
        first = failing[0]
        return (
            False,
            f"{len(failing)} will-fail: {first.get('title', '')} [{', '.join(first.get('nodes', [])[:2])}]"[
                :240
            ],
        )
    return True, ""


def split_summary(head: Path, tail: Path) -> dict[str, Any]:
    """The boundary of a split (from its manifest when there is one) and the tail's size."""
    import onnx

    sys.path.insert(0, str(HERE))
    import checks

    tail_model = onnx.load(str(tail), load_external_data=False)
    summary: dict[str, Any] = {
        "tail_nodes": checks.node_count(tail_model),
        "tail_ops": sorted({n.op_type for n in tail_model.graph.node}),
    }
    manifest = head.with_name(head.stem + ".split.json")
    if manifest.exists():
        data = json.loads(manifest.read_text())
        summary["boundary"] = [b["name"] for b in data.get("boundary", [])]
        summary["boundary_bytes"] = data.get("boundary_bytes")
    return summary


def _pass_names(pipeline: Path) -> list[str]:
    """The pass names of a passes.toml, in order."""
    return [p["name"] for p in tomllib.loads(pipeline.read_text()).get("pass", [])]


def _pair(value: Any) -> list:
    ok, detail = value
    return [bool(ok), str(detail)]


def run_model(
    entry: dict[str, Any], cache: Path, previous_peers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """All the steps for one model (runs inside the child process). ``previous_peers``: the peer
    cells of the last run's row, kept instead of running the peers again (``--keep-peers``)."""
    sys.path.insert(0, str(HERE))
    import checks
    import sources

    row: dict[str, Any] = {"name": entry["name"], "kind": entry["kind"], "source": entry["source"]}
    if entry.get("nodes_note"):
        row["nodes_note"] = entry["nodes_note"]
    timeout = float(entry.get("step_timeout", 600))
    rtol, atol = float(entry.get("rtol", 1e-3)), float(entry.get("atol", 1e-4))
    work = cache / "runs" / entry["name"]
    work.mkdir(parents=True, exist_ok=True)
    kept = {f"{tool}.onnx" for tool in (previous_peers or {})}
    for stale in work.glob("*"):
        if stale.is_file() and stale.name not in kept:
            stale.unlink()
    try:
        original = sources.make(entry, cache)
    except Exception as exc:  # noqa: BLE001 - a failed export or fetch is a row
        row["error"] = "source: " + checks._line(exc)
        return row
    import onnx

    original_model = onnx.load(str(original))
    row["orig_nodes"] = checks.node_count(original_model)
    del original_model
    try:
        first, fresh = make_sample(original, entry, 1), make_sample(original, entry, 2)
    except Exception as exc:  # noqa: BLE001
        row["error"] = "samples: " + checks._line(exc)
        return row
    pins = entry.get("pins", {})
    np.savez(work / "sample1.npz", **{k: v for k, v in first.items() if k not in pins})
    try:
        reference: Any = checks.run_ort(
            original, fresh
        )  # the original's outputs, once for every judge
    except Exception as exc:  # noqa: BLE001
        row["error"] = "original does not run in ONNX Runtime: " + checks._line(exc)
        return row

    out = work / "out.onnx"
    if os.environ.get(PATH_ENV) == "prepare":
        # the one-command path: ``surgery prepare`` with the same decisions does steps 1 and 2
        argv = [
            "prepare",
            str(original),
            "-o",
            str(out),
            "--report",
            str(work / "report.json"),
            "-q",
            "--data",
            str(work / "sample1.npz"),
        ]
        if entry.get("input_shape"):
            argv += ["--input-shape", entry["input_shape"]]
        for name, value in pins.items():
            argv += ["--pin", f"{name}={_toml_value(value)}"]
        started = time.perf_counter()
        try:
            proc = _surgery(argv, timeout)
            # exit 1: written, but the final doctor finds what will fail (the doctor column says what)
            code = 0 if proc.returncode == 1 and out.exists() else proc.returncode
            stderr = proc.stderr
        except subprocess.TimeoutExpired:
            code, stderr = -1, f"prepare timed out after {timeout:.0f} s"
        written = out.with_name("out.passes.toml")
        if written.exists():
            row["pipeline"] = _pass_names(written)
    else:
        # 1. doctor emits the pipeline; the user's decisions are added
        emitted = work / "emitted.toml"
        argv = ["doctor", str(original), "--emit-pipeline", str(emitted)]
        if entry.get("input_shape"):
            argv += ["--input-shape", entry["input_shape"]]
        for name, size in entry.get("dims", {}).items():
            argv += ["--dim", f"{name}={size}"]
        proc = _surgery(argv, timeout)
        if proc.returncode not in (0, 1) or not emitted.exists():
            row["error"] = (
                f"doctor --emit-pipeline exit {proc.returncode}: {_last_line(proc.stderr)}"
            )
            return row
        pipeline = work / "pipeline.toml"
        pipeline.write_text(user_pipeline(emitted.read_text(), entry))
        row["pipeline"] = _pass_names(pipeline)

        # 2. apply
        argv = [
            "apply",
            str(pipeline),
            str(original),
            "-o",
            str(out),
            "--report",
            str(work / "report.json"),
            "-q",
            "--data",
            str(work / "sample1.npz"),
        ]
        for override in entry.get("set", []):
            argv += ["--set", override]
        started = time.perf_counter()
        try:
            proc = _surgery(argv, timeout)
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            code, stderr = -1, f"apply timed out after {timeout:.0f} s"
    row["apply_seconds"] = round(time.perf_counter() - started, 1)
    row["apply"] = [
        code == 0 and out.exists(),
        "" if code == 0 else f"exit {code}: {_last_line(stderr)}",
    ]
    tail = out.with_name("out.tail.onnx")
    if row["apply"][0] and tail.exists():
        # split-postprocess ran: the head is what the compiler gets; it is judged alone, and the
        # composition (head then the CPU tail) must reproduce the original
        row["split"] = split_summary(out, tail)
    if row["apply"][0]:
        result = checks.static_readiness(
            reference, out, fresh, rtol, atol, tail=tail if "split" in row else None
        )
        for key in ("checker", "ort", "static", "no_cf", "opset", "no_f64", "parity"):
            row[key] = _pair(result[key])
        row["nodes"] = result["nodes"]
        row["doctor"] = _pair(_doctor_clean(out, timeout))
        ov_static, ov_match = checks.check_openvino(out, fresh, rtol, max(atol, 1e-4))
        row["ov_static"], row["ov_match"] = _pair(ov_static), _pair(ov_match)
    else:
        for key in SURGERY_CHECKS[1:]:
            row[key] = [False, "no output"]
    row["ready"] = all(row[key][0] for key in SURGERY_CHECKS)

    # 4. the peers, same shapes
    shapes = entry.get("input_shape", "")
    row["peers"] = {}
    if previous_peers:  # the peers do not depend on onnx-surgery: their last cells stand
        for tool, cell in previous_peers.items():
            target = work / f"{tool}.onnx"
            if cell.get("nodes") is not None and target.exists():  # with today's checks.newer_ops
                cell["newer_ops"] = checks.newer_ops(
                    onnx.load(str(target), load_external_data=False)
                )
        row["peers"] = previous_peers
        return row
    for tool in ("onnxsim", "onnxslim", "polygraphy"):
        target = work / f"{tool}.onnx"
        cell: dict[str, Any] = {}
        try:
            proc = subprocess.run(
                [sys.executable, str(HERE / "peers.py"), tool, str(original), str(target), shapes],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, **CHILD_ENV},
            )
            made = proc.returncode == 0 and target.exists()
            error = _last_line(proc.stderr) if not made else ""
        except subprocess.TimeoutExpired:
            made, error = False, f"timed out after {timeout:.0f} s"
        cell["run"] = [made, error]
        if made:
            result = checks.static_readiness(reference, target, fresh, rtol, atol)
            for key in PEER_CHECKS:
                cell[key] = _pair(result[key])
            cell["nodes"] = result["nodes"]
            cell["newer_ops"] = result["newer_ops"]
        else:
            for key in PEER_CHECKS:
                cell[key] = [False, "no output"]
            cell["nodes"] = None
        cell["ready"] = made and all(cell[key][0] for key in PEER_CHECKS)
        row["peers"][tool] = cell
    return row


# ----------------------------------------------------------------------------------------------- driver


def run_child(entry: dict[str, Any], cache: Path, keep_peers: bool = False) -> dict[str, Any]:
    """Run one model in a child process with the table's timeout; a crash is a failed row."""
    out = cache / "runs" / f"{entry['name']}.row.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    peers_file = cache / "runs" / f"{entry['name']}.peers.json"
    peers_file.unlink(missing_ok=True)
    if keep_peers and out.exists():
        last = json.loads(out.read_text()).get("peers") or {}
        if set(last) == {"onnxsim", "onnxslim", "polygraphy"}:
            peers_file.write_text(json.dumps(last))
    out.unlink(missing_ok=True)
    timeout = float(entry.get("timeout", 1200))
    started = time.perf_counter()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        entry["name"],
        "--cache",
        str(cache),
        "--row-out",
        str(out),
    ]
    if peers_file.exists():
        argv += ["--peers-in", str(peers_file)]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **CHILD_ENV},
        )
        error = (
            f"worker exit {proc.returncode}: {_last_line(proc.stderr)}" if proc.returncode else ""
        )
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    if out.exists() and not error:
        row = json.loads(out.read_text())
    else:
        row = {
            "name": entry["name"],
            "kind": entry["kind"],
            "source": entry["source"],
            "error": error or "worker wrote no row",
        }
        out.write_text(json.dumps(row, indent=1))  # a crashed row stays in the table (--render)
    row["seconds"] = round(time.perf_counter() - started, 1)
    row.setdefault("ready", False)
    return row


def first_failure(row: dict[str, Any]) -> str:
    if "error" in row:
        return row["error"]
    for key in SURGERY_CHECKS:
        if not row[key][0]:
            return f"{key}: {row[key][1]}"
    return ""


def _mark(value: Any) -> str:
    return "ok" if value and value[0] else "x"


def _peer_cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    if cell["ready"]:
        return f"ok {cell['nodes']}"
    failed = [k for k in ("run", *PEER_CHECKS) if not cell[k][0]]
    nodes = "" if cell["nodes"] is None else f" {cell['nodes']}"
    return f"x {failed[0]}{nodes}"


def best_peer_nodes(row: dict[str, Any]) -> int | None:
    """Fewest nodes among onnxsim's and onnxslim's outputs that are correct (checker, ORT, parity)."""
    counts = [
        cell["nodes"]
        for tool, cell in row.get("peers", {}).items()
        if tool in ("onnxsim", "onnxslim")
        and cell.get("nodes") is not None
        and all(cell[k][0] for k in ("checker", "ort", "parity"))
    ]
    return min(counts) if counts else None


#: Nodes onnx-surgery writes at opset <= 18 for one op that only newer opsets have (Gelu: Div,
#: Erf, Add, Mul, Mul); a peer output keeping N of them is compared at its count + N * (size - 1).
OPSET18_SIZE = {"Gelu": 5}


def nodes_verdict(row: dict[str, Any]) -> tuple[str, str]:
    """("ok" | "explained" | "above" | "-", why) for surgery's node count against the best peer.

    Above the best peer is explained when every correct peer output with fewer nodes keeps ops no
    opset <= 18 has (the target's limit), so that they must be written with older ops: with the
    ops of :data:`OPSET18_SIZE` the peer's count plus what they cost must reach surgery's; other
    such ops (e.g. opset-23 Attention) make the peer's output one the target cannot take at all.
    Otherwise the table's ``nodes_note`` for the row explains it, or nothing does."""
    best = best_peer_nodes(row)
    if row.get("nodes") is None or best is None:
        return "-", ""
    if row["nodes"] <= best:
        return "ok", ""
    below = {
        tool: cell
        for tool, cell in row.get("peers", {}).items()
        if tool in ("onnxsim", "onnxslim")
        and cell.get("nodes") is not None
        and cell["nodes"] < row["nodes"]
        and all(cell[k][0] for k in ("checker", "ort", "parity"))
    }
    reasons = []
    for tool, cell in sorted(below.items()):
        flow = cell.get("no_cf") or [True, ""]
        if not flow[0]:  # a Loop/Scan kept: fewer nodes, but not a static model the target takes
            reasons.append(
                f"{tool} {cell['nodes']} keeps control flow ({flow[1]}): the static, unrolled form has more nodes"
            )
            continue
        newer = cell.get("newer_ops") or {}
        if not newer:
            break
        kept = ", ".join(f"{n} {op}" for op, n in sorted(newer.items()))
        if all(op in OPSET18_SIZE for op in newer):
            adjusted = cell["nodes"] + sum(n * (OPSET18_SIZE[op] - 1) for op, n in newer.items())
            if adjusted < row["nodes"]:
                break
            reasons.append(
                f"{tool} {cell['nodes']} keeps {kept} (opset > 18; at opset 18 {adjusted})"
            )
        else:
            reasons.append(
                f"{tool} {cell['nodes']} keeps {kept} (no opset <= 18 form; com.microsoft: ONNX Runtime"
                " contrib ops, not ONNX)"
                if any(op.startswith("com.microsoft") for op in newer)
                else f"{tool} {cell['nodes']} keeps {kept} (no opset <= 18 form)"
            )
    else:
        if reasons:
            return "explained", "; ".join(reasons)
    if row.get("nodes_note"):
        return "explained", str(row["nodes_note"])
    return "above", ""


def _nodes_cell(row: dict[str, Any]) -> str:
    verdict, _ = nodes_verdict(row)
    best = best_peer_nodes(row)
    return {"-": "-", "ok": "ok", "explained": f"x {best} *", "above": f"x {best}"}[verdict]


def render(rows: list[dict[str, Any]]) -> str:
    header = [
        "model",
        "source",
        "ready",
        *SURGERY_CHECKS,
        "nodes",
        "orig",
        "<=peers",
        "onnxsim",
        "onnxslim",
        "polygraphy",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        peers = row.get("peers", {})
        cells = [row["name"], row["source"], "READY" if row["ready"] else "no"]
        cells += [_mark(row.get(key)) if "error" not in row else "-" for key in SURGERY_CHECKS]
        cells += [str(row.get("nodes", "-")), str(row.get("orig_nodes", "-")), _nodes_cell(row)]
        cells += [_peer_cell(peers.get(tool)) for tool in ("onnxsim", "onnxslim", "polygraphy")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    splits = [row for row in rows if row.get("split")]
    if splits:
        lines.append(
            "Split into a head (judged above: what the compiler gets) and a CPU tail (parity: head then tail):"
        )
        for row in splits:
            info = row["split"]
            size = info.get("boundary_bytes")
            lines.append(
                f"- {row['name']}: boundary {len(info.get('boundary', []))} tensor(s)"
                f"{'' if size is None else f', {size} bytes'}; tail {info['tail_nodes']} nodes "
                f"({', '.join(info['tail_ops'][:6])}{' …' if len(info['tail_ops']) > 6 else ''})"
            )
        lines.append("")
    notes = [
        (row["name"], nodes_verdict(row)[1]) for row in rows if nodes_verdict(row)[0] == "explained"
    ]
    if notes:
        lines.append("Node counts above the best peer, and why (* in <=peers):")
        lines += [f"- {name}: {why}" for name, why in notes]
        lines.append("")
    failures = [(row["name"], first_failure(row)) for row in rows if not row["ready"]]
    if failures:
        lines.append("Failures (first failing check of each row):")
        lines += [f"- {name}: {why}" for name, why in failures]
        lines.append("")
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    total = len(rows)
    parts = [f"surgery {sum(r['ready'] for r in rows)}/{total} ready"]
    for tool in ("onnxsim", "onnxslim", "polygraphy"):
        parts.append(
            f"{tool} {sum(bool(r.get('peers', {}).get(tool, {}).get('ready')) for r in rows)}/{total}"
        )
    verdicts = [nodes_verdict(r)[0] for r in rows]
    compared = [v for v in verdicts if v != "-"]
    parts.append(
        f"surgery nodes <= best of onnxsim/onnxslim on {compared.count('ok')}/{len(compared)} compared"
        f" ({compared.count('explained')} above it explained, {compared.count('above')} not)"
    )
    return "; ".join(parts)


def select(rows: list[dict[str, Any]], subset: str, only: list[str]) -> list[dict[str, Any]]:
    if only:
        unknown = [n for n in only if n not in {r["name"] for r in rows}]
        if unknown:
            raise SystemExit(f"run.py: no model named {unknown[0]!r} in models.toml")
        return [r for r in rows if r["name"] in only]
    return [r for r in rows if subset == "all" or r["ci"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", choices=("ci", "all"), default="all")
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="NAME", help="run only these models"
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument(
        "--render",
        action="store_true",
        help="print the table from the rows the last run left in the cache (runs nothing)",
    )
    parser.add_argument(
        "--path",
        choices=("apply", "prepare"),
        default="apply",
        help="the user's path: doctor --emit-pipeline + apply (default), or the one command prepare",
    )
    parser.add_argument(
        "--keep-peers",
        action="store_true",
        help="keep the peers' cells (and outputs) of each row's last run instead of running them again",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--peers-in", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = load_table()
    if not args.worker:
        os.environ[PATH_ENV] = args.path
    if args.worker:
        entry = next(r for r in rows if r["name"] == args.worker)
        previous = json.loads(args.peers_in.read_text()) if args.peers_in else None
        row = run_model(entry, args.cache, previous)
        args.row_out.write_text(json.dumps(row, indent=1))
        return 0
    chosen = select(rows, args.subset, args.only)
    if args.list:
        for row in chosen:
            print(f"{row['name']:<28} {'ci' if row['ci'] else '  '} {row['source']}")
        return 0
    if args.render:
        done = [args.cache / "runs" / f"{r['name']}.row.json" for r in chosen]
        ordered = [json.loads(p.read_text()) for p in done if p.exists()]
        notes = {r["name"]: r.get("nodes_note") for r in chosen}
        for row in ordered:
            row.setdefault("ready", False)
            row.pop("nodes_note", None)
            if notes.get(row["name"]):  # the table's current note, not the one of the run
                row["nodes_note"] = notes[row["name"]]
        print(render(ordered))
        return 0
    results: dict[str, dict[str, Any]] = {}

    def one(entry: dict[str, Any]) -> None:
        row = run_child(entry, args.cache, args.keep_peers)
        results[entry["name"]] = row
        status = "READY" if row["ready"] else "no: " + first_failure(row)
        print(
            f"[{len(results)}/{len(chosen)}] {entry['name']} ({row['seconds']} s) {status}",
            file=sys.stderr,
            flush=True,
        )

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, chosen))
    ordered = [results[r["name"]] for r in chosen]
    table = render(ordered)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(ordered, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
