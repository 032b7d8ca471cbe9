"""Past 2 GB: a model with 3 GiB of external weights goes through ``cleanup`` with every gate on.

The weights are a sparse file (zeros that cost no disk writes) with one block of random values, so
the test is fast, yet every code path sees tensors whose total exceeds protobuf's 2 GB limit.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.testing import ort_run

ROWS, COLS = 256, 600 * 1024 * 1024 // (4 * 256)  # 600 MiB a tensor
N_USED, N_UNUSED = 4, 1


def _external(name: str, offset: int, length: int, dims: list[int]) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=T.FLOAT, dims=dims, data_location=T.EXTERNAL)
    for key, value in (
        ("location", "big.onnx.data"),
        ("offset", str(offset)),
        ("length", str(length)),
    ):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    size = ROWS * COLS * 4
    names = [f"W{i}" for i in range(N_USED)] + [f"unused{i}" for i in range(N_UNUSED)]
    inits = [_external(n, i * size, size, [ROWS, COLS]) for i, n in enumerate(names)]
    nodes = [
        h.make_node("MatMul", ["x", f"W{i}"], [f"mm{i}"], name=f"/mm{i}/MatMul")
        for i in range(N_USED)
    ]
    nodes.append(h.make_node("Sum", [f"mm{i}" for i in range(N_USED)], ["y"], name="/Sum"))
    nodes.append(h.make_node("Identity", ["y"], ["y_id"], name="/Identity"))
    nodes.append(
        h.make_node("ReduceMax", ["y_id"], ["out"], name="/ReduceMax", keepdims=0, axes=[1])
    )
    nodes.append(h.make_node("Neg", ["x"], ["dead"], name="/dead/Neg"))
    graph = h.make_graph(
        nodes,
        "big",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", ROWS])],
        [h.make_tensor_value_info("out", T.FLOAT, ["batch"])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, folder / "big.onnx")
    with open(folder / "big.onnx.data", "wb") as f:
        f.truncate(size * len(names))  # sparse: zeros
        block = np.random.default_rng(0).standard_normal((ROWS, 1024)).astype(np.float32)
        for r in range(ROWS):  # a nonzero block in the first columns of W0
            f.seek(r * COLS * 4)
            f.write(block[r].tobytes())
    return folder / "big.onnx"


@pytest.mark.slow
def test_cleanup_over_2gb_with_gates(big_model, tmp_path):
    from surgery.passes.cleanup import Cleanup

    assert os.path.getsize(str(big_model) + ".data") > 2**31
    out = tmp_path / "out.onnx"
    x = np.random.default_rng(1).standard_normal((1, ROWS)).astype(np.float32)
    _, report = surgery.apply(str(big_model), [Cleanup()], inputs={"x": x}, output=out)
    step = report.steps[0]
    assert (
        step.modified and step.checker == "ok" and step.ort == "ok" and step.parity_status == "ok"
    )
    assert step.before.initializers == N_USED + N_UNUSED and step.after.initializers == N_USED
    assert step.after.initializer_bytes == N_USED * ROWS * COLS * 4 > 2**31
    assert os.path.getsize(str(out) + ".data") == N_USED * ROWS * COLS * 4
    saved = onnx.load(out, load_external_data=False)
    assert {n.op_type for n in saved.graph.node} == {"MatMul", "Sum", "ReduceMax"}
    assert len(saved.graph.initializer) == N_USED and saved.ir_version == 9
    onnx.checker.check_model(str(out), full_check=True)  # the checker by path, past 2 GB
    y = ort_run(str(out), {"x": x})["out"]
    assert y.shape == (1,) and np.isfinite(y).all() and abs(float(y[0])) > 0
