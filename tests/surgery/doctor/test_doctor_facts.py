"""The shipped ATC fact table: up to date with its sources, and the lookups over it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from surgery.doctor.facts import load_facts, parse_opsets
from surgery.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ROOT.parent / "shared" / "ascend"


@pytest.mark.skipif(
    not SOURCES.is_dir(), reason="the ATC source tables (../shared/ascend) are not next to the repo"
)
def test_shipped_table_is_built_from_the_current_sources():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_ascend_table.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_build_refuses_a_rule_whose_evidence_is_gone(tmp_path):
    if not SOURCES.is_dir():
        pytest.skip("the ATC source tables (../shared/ascend) are not next to the repo")
    for name in ("atc_unsupported.csv", "aicpu_only.csv", "README.md"):
        (tmp_path / name).write_bytes((SOURCES / name).read_bytes())
    text = (SOURCES / "atc_onnx_ops.csv").read_text(encoding="utf-8")
    (tmp_path / "atc_onnx_ops.csv").write_text(
        text.replace("step on the last axis must be 1", "anything"), "utf-8"
    )
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_ascend_table.py"),
            "--src",
            str(tmp_path),
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "step on the last axis must be 1" in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_table_records_sources_and_input_hashes():
    table = json.loads((ROOT / "surgery" / "data" / "atc_facts.json").read_text(encoding="utf-8"))
    assert {s["source"] for s in table["sources"]} >= {
        "msit-map",
        "hicann-plugin",
        "ge-parser",
        "canndev-2022",
    }
    assert set(table["inputs"]) == {
        "atc_onnx_ops.csv",
        "atc_unsupported.csv",
        "aicpu_only.csv",
        "README.md",
    }
    assert all(len(h) == 64 for h in table["inputs"].values())


def test_parse_opsets():
    assert parse_opsets("1,6,8-10") == {1, 6, 8, 9, 10}
    assert parse_opsets("any") is None
    assert parse_opsets("") == frozenset()


def test_lookups():
    facts = load_facts()
    conv = facts.lookup("", "Conv")
    assert conv.registered_at(18) and not conv.registered_at(19) and not conv.registered_at(7)
    assert (
        facts.lookup("ai.onnx", "Loop") is None
        and facts.unsupported["Loop"]["function_op"] is False
    )
    assert facts.lookup("", "Constant").registered_at(23)  # not looked up by opset
    assert facts.lookup("npu", "NPUMish").registered_at(1)
    einsum = facts.lookup("", "Einsum").aicpu[0]
    assert einsum.cann_op == "Einsum" and einsum.socs == ("Ascend310", "Ascend310P", "Ascend910")
    assert facts.lookup("", "TopK").aicpu[0].aicore_related == ("TopKD", "TopKV2D")


@pytest.mark.parametrize(
    "soc, family",
    [
        ("Ascend310", "Ascend310"),
        ("Ascend310P3", "Ascend310P"),
        ("Ascend910A", "Ascend910"),
        ("Ascend910B1", None),
        ("Ascend310B1", None),
    ],
)
def test_resolve_soc(soc, family):
    assert load_facts().resolve_soc(soc) == family


def test_resolve_soc_rejects_other_names():
    with pytest.raises(InputError, match="not an Ascend SoC"):
        load_facts().resolve_soc("Atlas 300I")
