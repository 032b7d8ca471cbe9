"""Extract a slice holding more than 2 GB of external weights (protobuf's limit).

``onnx.utils.extract_model`` fails here (it serializes the slice). The source weights are a sparse
file written by the test (zeros cost no disk writes) with a random block in each tensor, so the
intermediate tensor compared is not trivially zero.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery import model_io
from surgery.partition import extract, slice_reference

ROWS = 256
COLS = 560 * 1024 * 1024 // (4 * ROWS)  # 560 MiB a tensor; four make 2.2 GiB
N = 4


def _external(name: str, offset: int, length: int) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=T.FLOAT, dims=[ROWS, COLS], data_location=T.EXTERNAL)
    for key, value in (
        ("location", "src.onnx.data"),
        ("offset", str(offset)),
        ("length", str(length)),
    ):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big_extract")
    size = ROWS * COLS * 4
    inits = [_external(f"W{i}", i * size, size) for i in range(N)]
    inits.append(onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    nodes = [h.make_node("Mul", ["inp", "two"], ["x_scaled"], name="/pre/Mul")]
    nodes += [
        h.make_node("MatMul", ["x_scaled", f"W{i}"], [f"mm{i}"], name=f"/mm{i}/MatMul")
        for i in range(N)
    ]
    nodes += [
        h.make_node("Sum", [f"mm{i}" for i in range(N)], ["y"], name="/Sum"),
        h.make_node("Relu", ["y"], ["r"], name="/Relu"),
        h.make_node("ReduceMax", ["r"], ["out"], name="/ReduceMax", keepdims=0, axes=[1]),
    ]
    graph = h.make_graph(
        nodes,
        "big",
        [h.make_tensor_value_info("inp", T.FLOAT, [1, ROWS])],
        [h.make_tensor_value_info("out", T.FLOAT, [1])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, folder / "src.onnx")
    rng = np.random.default_rng(0)
    with open(folder / "src.onnx.data", "wb") as f:
        f.truncate(size * N)  # sparse zeros
        for i in range(N):  # a random block in the first 64 columns of every weight
            block = rng.standard_normal((ROWS, 64)).astype(np.float32)
            for r in range(ROWS):
                f.seek(i * size + r * COLS * 4)
                f.write(block[r].tobytes())
    return folder / "src.onnx"


@pytest.mark.slow
def test_slice_over_2gb_is_saved_external_and_matches_the_original(source, tmp_path):
    model = model_io.load(source)
    part = extract(model, ["x_scaled"], ["y"])
    assert [n.name for n in part.graph] == [f"/mm{i}/MatMul" for i in range(N)] + ["/Sum"]
    assert part.graph.inputs[0].dtype == ir.DataType.FLOAT and list(part.graph.inputs[0].shape) == [
        1,
        ROWS,
    ]
    for i in range(N):  # memory-mapped source tensors are shared, not read
        assert (
            part.graph.initializers[f"W{i}"].const_value
            is model.graph.initializers[f"W{i}"].const_value
        )
    assert model_io.initializer_bytes(part) > 2**31
    out = tmp_path / "slice.onnx"
    written = model_io.save(part, out)
    assert written == [out, tmp_path / "slice.onnx.data"]
    assert os.path.getsize(tmp_path / "slice.onnx.data") >= N * ROWS * COLS * 4 > 2**31
    saved = onnx.load(out, load_external_data=False)
    assert saved.ir_version == 9 and all(
        t.data_location == T.EXTERNAL for t in saved.graph.initializer
    )
    feeds = {"inp": np.random.default_rng(1).standard_normal((1, ROWS)).astype(np.float32)}
    part_feeds, expected = slice_reference(
        model, part, feeds
    )  # the original's intermediate tensors
    np.testing.assert_allclose(part_feeds["x_scaled"], feeds["inp"] * 2)
    session = ort.InferenceSession(
        str(out), providers=["CPUExecutionProvider"]
    )  # loads from the file
    (y,) = session.run(["y"], part_feeds)
    assert y.shape == (1, COLS) and np.abs(y[0, :64]).min() > 0 and not y[0, 64:].any()
    np.testing.assert_array_equal(y, expected["y"])
