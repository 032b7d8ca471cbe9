#!/usr/bin/env python3
"""Build ``surgery/data/atc_facts.json``, the ATC fact table ``surgery doctor`` reads.

The inputs are the three fact tables in ``../shared/ascend/`` (``atc_onnx_ops.csv``,
``atc_unsupported.csv``, ``aicpu_only.csv``) and their README, which records where each fact
came from. This script:

- keeps, per registered (domain, ONNX op), the opsets ATC's parser registers, the CANN op type,
  the CANN ops reachable from it that are AICPU-only per SoC, the free-text constraints and notes;
- keeps the standard ops no source registers (and whether ONNX defines them as functions);
- turns the constraint sentences the checks rely on into structured rules (modes, limits, dtype
  lists, severities). Each such rule names the sentence it is read from (``evidence``); the
  script stops if that sentence is no longer in the source table, so a rule cannot silently
  outlive its fact;
- records the sources (the README's table), the SHA-256 of every input file and the parser
  facts read from ``hicann/ge`` that the CSVs do not carry.

Run from the repository root::

    python scripts/build_ascend_table.py [--src ../shared/ascend] [--out surgery/data/atc_facts.json]
    python scripts/build_ascend_table.py --check   # exit 1 if the shipped file is out of date
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO.parent / "shared" / "ascend"
DEFAULT_OUT = REPO / "surgery" / "data" / "atc_facts.json"
INPUTS = ("atc_onnx_ops.csv", "atc_unsupported.csv", "aicpu_only.csv", "README.md")
SCHEMA = 1

SOC_ABBREV = {"310": "Ascend310", "310P": "Ascend310P", "910": "Ascend910"}

# SoC names accepted by --soc for each SoC the AICPU lists describe (canndev-2022 ships one
# ini per directory ascend310 / ascend310p / ascend910; Ascend910B and Ascend310B are other
# chips with no list here).
SOC_FAMILIES = {
    "Ascend310": r"Ascend310",
    "Ascend310P": r"Ascend310P\d*",
    "Ascend910": r"Ascend910(A|ProA|ProB|PremiumA)?",
}

# Facts read directly from hicann/ge (not carried by the CSVs).
GE_PARSER = {
    "source": (
        "hicann/ge parser/parser/onnx/onnx_parser.cc (stored 0273d4ef), "
        "parser/parser/common/pre_checker.cc (stored 671dd64c)"
    ),
    "lookup_key": "<domain>::<opset_import version of that domain>::<op_type>; empty domain read as ai.onnx",
    "builtin_ops": ["Constant", "FileConstant"],
    "unnamed_node_name": "{op_type}_{index}",
    "initializer_node_name": "{name}_Initializer_{index}",
    "facts": [
        "ConstructOriType: the op is looked up under domain::version::op with the model's opset_import "
        "version for the node's domain; a domain missing from opset_import fails; there is no fallback "
        "to a lower version",
        "ParseInput: a root graph with zero inputs fails with E16001; ParseOutput: zero outputs fail with E16001",
        "ParseInput: every graph input without an initializer becomes a Data node named after the input",
        "UpdateNodeNameAndOpType: unnamed nodes are named <op_type>_<index>",
        "PreChecker::CheckName: two nodes of one graph with the same name fail with E13009 "
        "(Data nodes for inputs included)",
        "PreChecker::CheckTypeSupported: an op with no registered parser fails with E13010",
    ],
}

# Structured rules read from the constraint sentences. ``evidence`` = (op, sentence that must be
# in that op's ``constraints`` or ``notes``); the script fails when it is not.
RULES: dict[str, dict[str, Any]] = {
    "opset": {
        "severity": "will-fail",
        "error": "E19010 (no parser is registered for domain::version::op)",
        "source": "ge-parser",
    },
    "unregistered": {
        "severity": "will-fail",
        "error": "E19010 / E13010 (no parser registered)",
        "source": "atc_unsupported.csv + atc_onnx_ops.csv",
    },
    "domains": {
        "severity": "will-fail",
        "error": "E16005 (extra opset domains, reported from the field on torch dynamo exports)",
        "source": "ge-parser lookup key; field reports (issue 6)",
    },
    "graph_io": {"severity": "will-fail", "error": "E16001", "source": "ge-parser"},
    "names": {
        "severity": "will-fail",
        "error": "E13009 (op name repeated in the graph)",
        "source": "ge-parser",
        "cmdline_separators": [";", ","],
        "cmdline_severity": "info",
    },
    "dynamic": {
        "severity": "will-fail",
        "error": "E10001 (maybe you should set input_shape to specify its shape)",
        "source": "ATC error reference (hiascend / Huawei Cloud CANN blog, 'ATC dynamic shape cases')",
    },
    "aicpu": {
        "severity": "slow",
        "source": "canndev-2022 (aicpu_only.csv)",
        "note": (
            "AICPU-only means: no AI Core entry in the June-2022 canndev ini for that SoC. Confirm on a "
            "live install with ms_fast_query (opInfo.engine DNN_VM_AICPU)."
        ),
    },
    "float64": {
        "severity": "will-fail",
        "source": "atc_onnx_ops.csv (Cast constraints) and the ATC field error EZ3002",
        "evidence": ("Cast", "op page lists no double"),
    },
    "dtype_limits": {
        "severity": "slow",
        "source": "atc_onnx_ops.csv constraints (CANN ONNX op pages)",
        "limits": [
            {
                "op": "Gather",
                "input": 0,
                "allowed": ["float16", "float32"],
                "evidence": ("Gather", "data fp16/fp32"),
            },
            {
                "op": "GatherElements",
                "input": 0,
                "allowed": ["float16", "float32", "int32"],
                "evidence": ("GatherElements", "input fp16/fp32/int32"),
            },
            {
                "op": "TopK",
                "input": 0,
                "allowed": ["float16", "float32"],
                "evidence": ("TopK", "input fp16/fp32 only"),
            },
        ],
    },
    "maxpool": {
        "indices_severity": "will-fail",
        "storage_order_severity": "will-fail",
        "dilations_2d_severity": "will-fail",
        "limits_severity": "slow",
        "max_kernel_dim": 255,
        "max_kernel_area": 256,
        "max_stride": 63,
        "evidence": [
            ("MaxPool", "Indices output rejected"),
            ("MaxPool", "storage_order unsupported"),
            ("MaxPool", "kernel dim outside [1,255] or kh*kw>256 or stride>63 falls back to AICPU"),
            ("MaxPool", "2D has no dilations"),
        ],
    },
    "averagepool": {
        "severity": "will-fail",
        "max_kernel_dim": 255,
        "evidence": ("AveragePool", "kernel <= 255"),
    },
    "dropout": {
        "mask_severity": "will-fail",
        "severity": "info",
        "evidence": (
            "Dropout",
            "removed by GE DropOutPass (input0 -> output); mask output not produced",
        ),
    },
    "resize": {
        "modes": ["nearest", "linear"],
        "mode_severity": "will-fail",
        "constant_scales_severity": "will-fail",
        "rank5_modes": ["linear"],
        "rank5_coordinate_modes": ["align_corners", "pytorch_half_pixel"],
        "rank5_severity": "will-fail",
        "nearest_mode_effective": "round_prefer_ceil",
        "half_pixel_modes_2022": ["half_pixel"],
        "risk_severity": "precision-risk",
        "evidence": [
            ("Resize", "nearest and linear only"),
            ("Resize", "scales/sizes must be constant"),
            ("Resize", "nearest behaves as round_prefer_ceil (8.1+ docs)"),
            ("Resize", "5D: linear with align_corners or pytorch_half_pixel only"),
            ("Resize", "2022 plugin ignores nearest_mode and treats half_pixel as asymmetric"),
        ],
    },
    "gather": {
        "negative_indices_severity": "will-fail",
        "evidence": ("Gather", "negative indices unsupported"),
    },
    "pad": {
        "modes": ["constant", "reflect", "edge"],
        "constant_value": 0.0,
        "severity": "will-fail",
        "evidence": [
            ("Pad", "modes constant/reflect/edge (no wrap)"),
            ("Pad", "constant_value must be 0"),
        ],
    },
    "slice": {
        "last_axis_step": 1,
        "min_rank": 2,
        "severity": "will-fail",
        "evidence": [
            ("Slice", "step on the last axis must be 1"),
            ("Slice", "input rank must not be 1"),
        ],
    },
    "nms": {
        "min_inputs": 5,
        "severity": "will-fail",
        "padded_output_severity": "precision-risk",
        "max_output_boxes_per_class": 700,
        "evidence": [
            ("NonMaxSuppression", "3 or 4 inputs crash ATC 9.0.1 (give all 5)"),
            ("NonMaxSuppression", "output fixed [max_out*batch*classes,3] padded with -1"),
            ("NonMaxSuppression", "max_output_boxes_per_class>700 may exhaust resources"),
        ],
    },
    "gridsample": {
        "rank": 4,
        "modes": ["bilinear", "nearest", "linear"],
        "severity": "will-fail",
        "evidence": ("GridSample", "4D only; bilinear/nearest only (no bicubic)"),
    },
    "data_dependent": {
        "ops": ["NonZero", "Unique"],
        "severity": "info",
        "evidence": [
            ("NonZero", "data-dependent output shape: forbidden with gear"),
            ("Unique", "data-dependent output shape: forbidden with gear"),
        ],
    },
    "empty": {
        "severity": "info",
        "source": "not in the shipped data: support for zero-size tensors varies by op",
    },
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def parse_aicpu_column(text: str) -> list[dict[str, Any]]:
    """``Cumsum@310/310P/910 (AI Core related: CumsumD); X@310`` → structured entries."""
    entries = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        m = re.fullmatch(r"([A-Za-z0-9_]+)@([0-9P/]+)(?: \(AI Core related: ([^)]*)\))?", part)
        if not m:
            raise SystemExit(f"cannot parse aicpu_only_2022 entry {part!r}")
        socs = [SOC_ABBREV[s] for s in m.group(2).split("/")]
        related = m.group(3).split("/") if m.group(3) else []
        entries.append({"cann_op": m.group(1), "socs": socs, "aicore_related": related})
    return entries


def sources_from_readme(text: str) -> list[dict[str, str]]:
    section = text.split("## Sources", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| source") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 4:
            raise SystemExit(f"unexpected row in the README's Sources table: {line!r}")
        rows.append(dict(zip(("source", "repo_commit", "paths", "licence"), cells, strict=True)))
    if not rows:
        raise SystemExit("the README has no Sources table")
    return rows


def check_evidence(rules: dict[str, Any], ops: dict[str, dict[str, Any]]) -> None:
    def one(ev: Any, where: str) -> None:
        op, sentence = ev
        row = ops.get(op)
        if row is None:
            raise SystemExit(f"rule {where}: op {op} is not in atc_onnx_ops.csv")
        if sentence not in row["constraints"] and sentence not in row["notes"]:
            raise SystemExit(f"rule {where}: '{sentence}' is no longer in the constraints of {op}")

    for name, rule in rules.items():
        evidence = rule.get("evidence")
        if evidence is not None:
            for ev in evidence if isinstance(evidence, list) else [evidence]:
                one(ev, name)
        for limit in rule.get("limits", []):
            one(limit["evidence"], f"{name}/{limit['op']}")


def build(src: Path) -> dict[str, Any]:
    for name in INPUTS:
        if not (src / name).is_file():
            raise SystemExit(
                f"{src / name}: missing (give --src the folder with the ATC fact tables)"
            )
    op_rows = read_csv(src / "atc_onnx_ops.csv")
    unsupported_rows = read_csv(src / "atc_unsupported.csv")
    aicpu_rows = read_csv(src / "aicpu_only.csv")

    domains: dict[str, dict[str, Any]] = {}
    for row in op_rows:
        entry = {
            "opsets": row["opsets"],
            "cann_op": row["cann_op"],
            "standard": row["is_standard"] == "yes",
            "aicpu": parse_aicpu_column(row["aicpu_only_2022"]),
            "constraints": row["constraints"],
            "notes": row["notes"],
            "source": row["source"],
        }
        domains.setdefault(row["domain"], {})[row["onnx_op"]] = entry

    # Cross-check the per-op AICPU column against aicpu_only.csv (same facts, other direction).
    listed = {(r["cann_op"], r["soc"]) for r in aicpu_rows}
    for domain, ops in domains.items():
        for op, entry in ops.items():
            for item in entry["aicpu"]:
                for soc in item["socs"]:
                    if (item["cann_op"], soc) not in listed:
                        raise SystemExit(
                            f"{domain}::{op}: {item['cann_op']}@{soc} is not in aicpu_only.csv"
                        )

    unsupported = {
        row["onnx_op"]: {
            "since_version": int(row["since_version"]),
            "function_op": "ONNX function op" in row["notes"],
            "notes": row["notes"],
        }
        for row in unsupported_rows
    }

    check_evidence(RULES, domains["ai.onnx"])
    readme = (src / "README.md").read_text(encoding="utf-8")
    aicpu_counts: dict[str, int] = {}
    for r in aicpu_rows:
        aicpu_counts[r["soc"]] = aicpu_counts.get(r["soc"], 0) + 1
    return {
        "schema": SCHEMA,
        "generated_by": "scripts/build_ascend_table.py",
        "inputs": {name: sha256(src / name) for name in INPUTS},
        "sources": sources_from_readme(readme),
        "ge_parser": GE_PARSER,
        "soc_families": SOC_FAMILIES,
        "aicpu_only_rows": aicpu_counts,
        "rules": _jsonable(RULES),
        "ops": {d: dict(sorted(ops.items())) for d, ops in sorted(domains.items())},
        "unsupported": dict(sorted(unsupported.items())),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return {"op": obj[0], "text": obj[1]}
    if isinstance(obj, list):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", type=Path, default=DEFAULT_SRC, help="folder with the ATC fact tables"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --out differs from a fresh build"
    )
    args = parser.parse_args(argv)
    text = render(build(args.src))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run scripts/build_ascend_table.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    n_ops = sum(len(v) for v in json.loads(text)["ops"].values())
    print(
        f"wrote {args.out}: {n_ops} registered ops, {len(json.loads(text)['unsupported'])} unregistered standard ops"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
