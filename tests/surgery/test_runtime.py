"""surgery.runtime.SplitRunner: chaining parts given as files, sessions, ir models or callables."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery import model_io
from surgery.partition import split
from surgery.runtime import SplitRunner
from surgery.testing import make_model, ort_run, vi


def _model() -> ir.Model:
    nodes = [
        h.make_node("Mul", ["x", "two"], ["scaled"], name="mul"),
        h.make_node("Greater", ["scaled", "thr"], ["mask"], name="gt"),
        h.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        h.make_node("Transpose", ["nz"], ["idx"], name="tr", perm=[1, 0]),
    ]
    return ir.from_proto(
        make_model(
            nodes,
            [vi("x", T.FLOAT, [2, 3]), vi("thr", T.FLOAT, [])],
            [vi("scaled", T.FLOAT, [2, 3]), vi("idx", T.INT64, ["n", 2])],
            {"two": np.array(2.0, np.float32)},
        )
    )


FEEDS = {
    "x": np.array([[0.1, 0.9, 0.4], [0.7, 0.2, 0.6]], np.float32),
    "thr": np.array(1.0, np.float32),
}


class FakeNpuHead:
    """What deployment code wraps around an NPU runtime: run(feeds) -> outputs."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, feeds):
        self.calls += 1
        scaled = feeds["x"] * 2
        return {"scaled": scaled, "mask": scaled > feeds["thr"]}


def test_runner_accepts_every_kind_of_part(tmp_path):
    model = _model()
    parts = split(model)
    assert parts.boundary == ["mask"] and parts.tail_graph_inputs == []
    expected = ort_run(model, FEEDS)
    model_io.save(parts.tail, tmp_path / "tail.onnx")
    session = ort.InferenceSession(str(tmp_path / "tail.onnx"), providers=["CPUExecutionProvider"])
    fake = FakeNpuHead()
    for head, tail in ((parts.head, parts.tail), (fake, tmp_path / "tail.onnx"), (fake, session)):
        got = SplitRunner([head, tail], outputs=["scaled", "idx"])(FEEDS)
        np.testing.assert_array_equal(got["scaled"], expected["scaled"])
        np.testing.assert_array_equal(got["idx"], expected["idx"])
    assert fake.calls == 2
    # without an output list: every output no later part reads
    assert list(SplitRunner([parts.head, parts.tail]).run(FEEDS)) == ["scaled", "idx"]


def test_runner_errors_are_clear(tmp_path):
    parts = split(_model())
    runner = SplitRunner([parts.head, parts.tail], outputs=["scaled", "idx"])
    with pytest.raises(KeyError, match="head needs inputs that are not available: thr"):
        runner.run({"x": FEEDS["x"]})
    with pytest.raises(KeyError, match="the parts did not produce: nope"):
        SplitRunner([parts.head, parts.tail], outputs=["nope"]).run(FEEDS)
    with pytest.raises(FileNotFoundError, match="tail: no such model file"):
        SplitRunner([parts.head, tmp_path / "missing.onnx"])
    (tmp_path / "m.json").write_text(json.dumps({"parts": [{"name": "head", "file": None}]}))
    with pytest.raises(ValueError, match="part 'head' has no file"):
        SplitRunner.from_manifest(tmp_path / "m.json")
    with pytest.raises(TypeError, match="expected a model path"):
        SplitRunner([42])
