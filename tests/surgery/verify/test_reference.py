"""The reference oracle on every model the tool loads: external data (dynamo exports), > 2 GB, subgraphs."""

from __future__ import annotations

import resource

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import surgery
from surgery import model_io
from surgery.registry import get
from surgery.verify.reference import run_reference


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_float64_dynamo_export_with_external_data_runs_on_the_reference_oracle(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 8, 3)
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            y = torch.nn.functional.avg_pool1d(
                self.conv(x), 2
            )  # float64 Conv/AveragePool/Erf: no ORT CPU kernel
            return torch.erf(self.fc(y.transpose(1, 2)))

    torch.manual_seed(0)
    net = Net().double().eval()
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, external_data=True)
    assert any(
        p.name.endswith(".data") for p in tmp_path.iterdir()
    )  # the exporter wrote external data

    model = model_io.load(path)
    got = run_reference(model, {"x": x.numpy()})
    name = model.graph.outputs[0].name
    np.testing.assert_allclose(got[name], net(x).detach().numpy(), rtol=1e-6, atol=1e-7)

    _, report = surgery.apply(str(path), [get("cleanup")()])
    assert report.oracle == "reference evaluator"
    assert report.steps[0].parity_status in ("ok", "unchanged")


def test_reference_runs_a_model_over_2_gb_without_copying_its_weights(tmp_path):
    rows, cols = (
        540_000,
        1024,
    )  # 2.2 GB of float32 in a sparse file: nothing is written but three rows
    data = tmp_path / "w.bin"
    with open(data, "wb") as f:
        f.truncate(rows * cols * 4)
        for r in (0, 7, rows - 1):
            f.seek(r * cols * 4)
            f.write(np.full(cols, r + 1, np.float32).tobytes())
    w = onnx.TensorProto(name="W", data_type=T.FLOAT, dims=[rows, cols], data_location=T.EXTERNAL)
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(rows * cols * 4))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = h.make_graph(
        [h.make_node("Gather", ["W", "idx"], ["y"], name="gather")],
        "big",
        [h.make_tensor_value_info("idx", T.INT64, [3])],
        [h.make_tensor_value_info("y", T.FLOAT, [3, cols])],
        [w],
    )
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, tmp_path / "big.onnx")
    model = model_io.load(tmp_path / "big.onnx")
    before = _peak_rss_mb()
    y = run_reference(model, {"idx": np.array([7, 0, rows - 1])})["y"]
    np.testing.assert_array_equal(y[:, 0], [8, 1, rows])
    assert _peak_rss_mb() - before < 1024  # the table was mapped, not read (2.2 GB)


def test_reference_runs_subgraph_initializers_stored_as_external_data(tmp_path):
    k = np.arange(600, dtype=np.float32)
    then_g = h.make_graph(
        [h.make_node("Add", ["x", "K"], ["t"], name="add")],
        "then",
        [],
        [h.make_tensor_value_info("t", T.FLOAT, [600])],
        [numpy_helper.from_array(k, "K")],
    )
    else_g = h.make_graph(
        [h.make_node("Sub", ["x", "K2"], ["e"], name="sub")],
        "else",
        [],
        [h.make_tensor_value_info("e", T.FLOAT, [600])],
        [numpy_helper.from_array(-k, "K2")],
    )
    graph = h.make_graph(
        [h.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)],
        "g",
        [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [600])],
        [h.make_tensor_value_info("y", T.FLOAT, [600])],
    )
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(
        proto, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0
    )
    model = model_io.load(tmp_path / "m.onnx")
    x = np.ones(600, np.float32)
    np.testing.assert_array_equal(run_reference(model, {"c": np.array(True), "x": x})["y"], x + k)
    np.testing.assert_array_equal(run_reference(model, {"c": np.array(False), "x": x})["y"], x + k)
    # the model's own external tensors are untouched (the inlining is undone)
    sub = model.graph.node(0).attributes["then_branch"].value
    assert type(sub.initializers["K"].const_value).__name__ == "ExternalTensor"
