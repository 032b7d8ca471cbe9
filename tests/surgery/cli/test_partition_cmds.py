"""``surgery extract``, ``surgery split`` and ``surgery compare`` on small models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.runtime import SplitRunner
from surgery.testing import make_model, ort_run, vi


def _net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node(
            "Conv", ["images", "c1.w"], ["/c1/Conv_output_0"], name="/c1/Conv", pads=[1, 1, 1, 1]
        ),
        h.make_node("Relu", ["/c1/Conv_output_0"], ["/c1/Relu_output_0"], name="/c1/Relu"),
        h.make_node("Conv", ["/c1/Relu_output_0", "c2.w"], ["/c2/Conv_output_0"], name="/c2/Conv"),
        h.make_node("Sigmoid", ["/c2/Conv_output_0"], ["scores"], name="/c2/Sigmoid"),
        h.make_node("Greater", ["scores", "thr"], ["/post/mask"], name="/post/Greater"),
        h.make_node("NonZero", ["/post/mask"], ["/post/nz"], name="/post/NonZero"),
        h.make_node("Transpose", ["/post/nz"], ["hits"], name="/post/Transpose", perm=[1, 0]),
    ]
    inits = {
        "c1.w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "c2.w": rng.standard_normal((2, 4, 3, 3)).astype(np.float32),
        "thr": np.array(0.8, np.float32),
    }
    return make_model(
        nodes,
        [vi("images", T.FLOAT, [1, 3, 8, 8])],
        [vi("scores", T.FLOAT, [1, 2, 6, 6]), vi("hits", T.INT64, ["n", 4])],
        inits,
        ir_version=8,
    )


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return {"images": np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)}


def test_extract_command(tmp_path, capsys):
    onnx.save(_net(), tmp_path / "net.onnx")
    out = tmp_path / "part.onnx"
    rc = main(
        [
            "extract",
            str(tmp_path / "net.onnx"),
            "--inputs",
            "/c1/Relu_output_0",
            "--outputs",
            "scores",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "part: 2 of 7 nodes" in text and "input  /c1/Relu_output_0: float32[1,4,8,8]" in text
    assert (
        "verified: checker ok, onnxruntime ok, 1 output(s) match the original (max abs 0)" in text
    )
    part = onnx.load(out)
    assert [n.name for n in part.graph.node] == ["/c2/Conv", "/c2/Sigmoid"] and part.ir_version == 8
    # unknown names and bad cuts: one line on stderr, exit 2
    assert (
        main(
            [
                "extract",
                str(tmp_path / "net.onnx"),
                "--inputs",
                "/c1/Relu",
                "--outputs",
                "scores",
                "-o",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean '/c1/Relu_output_0'" in err[0]
    assert (
        main(
            [
                "extract",
                str(tmp_path / "net.onnx"),
                "--inputs",
                "/c2/Conv_output_0",
                "--outputs",
                "scores,/c1/Relu_output_0",
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert "does not separate" in capsys.readouterr().err
    assert (
        main(
            [
                "extract",
                str(tmp_path / "net.onnx"),
                "--inputs",
                "images",
                "--outputs",
                "scores",
                "-o",
                str(tmp_path / "net.onnx"),
            ]
        )
        == 2
    )
    assert "is the input model" in capsys.readouterr().err


def test_split_command_writes_head_tail_and_manifest(tmp_path, capsys):
    onnx.save(_net(), tmp_path / "net.onnx")
    head, tail = tmp_path / "head.onnx", tmp_path / "tail.onnx"
    rc = main(
        [
            "split",
            str(tmp_path / "net.onnx"),
            "--head",
            str(head),
            "--tail",
            str(tail),
            "--report",
            str(tmp_path / "split.json"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "boundary (auto): /post/mask" in text and "head then tail vs original: ok" in text
    from surgery.testing import schema_errors

    report = json.loads((tmp_path / "split.json").read_text())
    assert schema_errors(report) == [] and report["kind"] == "single"
    assert (
        report["outputs"] == [str(head), str(tail)]
        and [st["name"] for st in report["steps"]][-1] == "split-postprocess"
    )
    manifest = json.loads((tmp_path / "head.split.json").read_text())
    assert manifest["outputs"] == ["scores", "hits"] and manifest["source"] == "auto"
    assert manifest["hostile"][0]["node"] == "/post/NonZero"
    assert [(p["name"], p["file"], p["produces"]) for p in manifest["parts"]] == [
        ("head", "head.onnx", ["scores"]),
        ("tail", "tail.onnx", ["hits"]),
    ]
    assert manifest["boundary"] == [
        {"name": "/post/mask", "dtype": "bool", "shape": [1, 2, 6, 6], "bytes": 72}
    ]
    assert manifest["boundary_bytes"] == 72 and "/post/mask (72 B); 1 tensor(s), 72 B" in text
    import onnxruntime as ort

    options = ort.SessionOptions()  # the kernels of the reference run, for a bit-exact comparison
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    runner = SplitRunner.from_manifest(tmp_path / "head.split.json", session_options=options)
    model = ir.from_proto(_net())
    for seed in range(3):
        ref, got = ort_run(model, _feeds(seed)), runner.run(_feeds(seed))
        assert list(got) == ["scores", "hits"]
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key])
    # a user boundary that does not separate: exit 2, one line
    assert (
        main(
            [
                "split",
                str(tmp_path / "net.onnx"),
                "--head",
                str(head),
                "--tail",
                str(tail),
                "--boundary",
                "/post/nz,thr",
            ]
        )
        == 2
    )
    # a model without post-processing: exit 2 with the reason
    no_post = _net()
    del no_post.graph.node[4:]
    del no_post.graph.output[1]
    onnx.save(no_post, tmp_path / "plain.onnx")
    capsys.readouterr()
    assert (
        main(["split", str(tmp_path / "plain.onnx"), "--head", str(head), "--tail", str(tail)]) == 2
    )
    assert "no data-dependent or NPU-hostile op" in capsys.readouterr().err


def test_compare_command_names_the_perturbed_conv(tmp_path, capsys):
    onnx.save(_net(), tmp_path / "a.onnx")
    b = _net()
    w = onnx.numpy_helper.to_array(b.graph.initializer[1]).copy()
    w[1, 2, 0, 0] += 0.25
    b.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(w, "c2.w"))
    onnx.save(b, tmp_path / "b.onnx")
    np.savez(tmp_path / "in.npz", **_feeds(3))
    rc = main(
        [
            "compare",
            str(tmp_path / "a.onnx"),
            str(tmp_path / "b.onnx"),
            "--data",
            str(tmp_path / "in.npz"),
            "--report",
            str(tmp_path / "cmp.json"),
        ]
    )
    assert rc == 1
    text = capsys.readouterr().out
    assert "ok   cos 1.000000  max_abs 0  max_rel 0  /c1/Conv_output_0 [Conv]" in text
    assert (
        "FAIL" in text
        and "first divergent tensor: '/c2/Conv_output_0' (output of Conv '/c2/Conv')" in text
    )
    assert "initializer input 'c2.w' differs" in text
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert data["summary"]["first_divergent"] == "/c2/Conv_output_0"
    assert [t["name"] for t in data["tensors"]][:3] == [
        "/c1/Conv_output_0",
        "/c1/Relu_output_0",
        "/c2/Conv_output_0",
    ]
    assert data["tensors"][0]["ok"] and not data["tensors"][2]["ok"]
    # same model: exit 0; a renamed tensor is matched through a rename map
    renamed = _net()
    for node in renamed.graph.node:
        node.input[:] = ["relu1" if i == "/c1/Relu_output_0" else i for i in node.input]
        node.output[:] = ["relu1" if o == "/c1/Relu_output_0" else o for o in node.output]
    onnx.save(renamed, tmp_path / "r.onnx")
    (tmp_path / "map.json").write_text(json.dumps({"/c1/Relu_output_0": "relu1"}))
    assert main(["compare", str(tmp_path / "a.onnx"), str(tmp_path / "r.onnx")]) == 0
    assert "1 tensors only in the reference: '/c1/Relu_output_0'" in capsys.readouterr().out
    assert (
        main(
            [
                "compare",
                str(tmp_path / "a.onnx"),
                str(tmp_path / "r.onnx"),
                "--renamed",
                str(tmp_path / "map.json"),
                "--failures-only",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "compared 7 tensors" in out and "only in" not in out and "[Conv]" not in out


def test_compare_a_split_head_and_tail_with_the_original(tmp_path, capsys):
    onnx.save(_net(), tmp_path / "net.onnx")
    assert (
        main(
            [
                "split",
                str(tmp_path / "net.onnx"),
                "--head",
                str(tmp_path / "h.onnx"),
                "--tail",
                str(tmp_path / "t.onnx"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    rc = main(
        [
            "compare",
            str(tmp_path / "net.onnx"),
            str(tmp_path / "h.onnx"),
            "--tail",
            str(tmp_path / "t.onnx"),
            "--rtol",
            "0",
            "--atol",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "compared 7 tensors" in out and "no tensor breaks tolerance" in out


def test_extract_command_runs_the_extract_pass_through_the_gates(tmp_path, capsys):
    """`surgery extract` is one API call: its report is the runner's (the extract step, each gate
    with its samples, the declared interface change), not a second checker + parity of its own."""
    onnx.save(_net(), tmp_path / "net.onnx")
    out, report = tmp_path / "part.onnx", tmp_path / "r.json"
    argv = ["extract", str(tmp_path / "net.onnx"), "--inputs", "/c1/Relu_output_0"]
    assert main([*argv, "--outputs", "scores", "-o", str(out), "--report", str(report)]) == 0
    capsys.readouterr()
    doc = json.loads(report.read_text())
    (step,) = doc["steps"]
    assert step["name"] == "extract" and step["modified"] is True
    assert step["options"]["inputs"] == ["/c1/Relu_output_0"]
    gates = step["gates"]
    assert [gates[g]["status"] for g in ("checker", "ort", "parity")] == ["passed"] * 3
    assert len(gates["parity"]["samples"]) >= 3  # the planned sample and the wider ones
    assert step["stats"]["nodes_kept"] == 2 and step["signature_changes"]
    assert doc["outputs"] == [str(out)] and not (tmp_path / "part.onnx.repro").exists()
