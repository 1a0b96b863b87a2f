"""`nima.runtime.device_rows`: the packaged gather graphs, and rows taken with them equal numpy's take.

Run as a script to (re)write the graphs: ``.venv/bin/python tests/runtime/test_device_rows.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from nima.runtime.device_rows import DATA, ELEMENT_TYPES, RANKS, ROWS, SELECTED, DeviceRows, graph_path
from nima.runtime.errors import GenerateError
from nima.runtime.session import host_value

ONNX_TYPES = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int64": TensorProto.INT64}
NUMPY_TYPES = {"float": np.float32, "float16": np.float16, "int64": np.int64}


def gather_rows_model(element: str, rank: int) -> onnx.ModelProto:
    """``selected = Gather(data, rows, axis=0)`` for a ``rank``-D tensor of ``element`` values."""
    kind = ONNX_TYPES[element]
    dims = [f"d{i}" for i in range(rank)]
    graph = helper.make_graph(
        [helper.make_node("Gather", [DATA, ROWS], [SELECTED], axis=0)],
        f"gather_rows_{element}_{rank}d",
        [
            helper.make_tensor_value_info(DATA, kind, dims),
            helper.make_tensor_value_info(ROWS, TensorProto.INT64, ["n"]),
        ],
        [helper.make_tensor_value_info(SELECTED, kind, ["n", *dims[1:]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    model.producer_name = "nima"
    return model


def test_every_element_type_has_its_graph() -> None:
    assert set(ELEMENT_TYPES.values()) == set(ONNX_TYPES)


@pytest.mark.parametrize("element", sorted(ONNX_TYPES))
@pytest.mark.parametrize("rank", RANKS)
def test_packaged_graph_is_what_the_builder_writes(element: str, rank: int) -> None:
    path = graph_path(f"tensor({element})", rank)
    onnx.checker.check_model(str(path), full_check=True)
    assert onnx.load(str(path)) == gather_rows_model(element, rank)


@pytest.mark.parametrize("element", sorted(ONNX_TYPES))
@pytest.mark.parametrize("wrapped", [True, False])
def test_taken_rows_equal_numpy_take(element: str, wrapped: bool) -> None:
    """Beam reordering repeats and drops rows; the values are 4-D caches or 2-D masks."""
    rng = np.random.default_rng(0)
    rows_device = DeviceRows("cpu")
    for shape, rows in [((3, 2, 5, 4), [2, 2, 0]), ((4, 7), [3, 1]), ((1, 2, 0, 4), [0, 0, 0, 0])]:
        array = (rng.standard_normal(shape) * 100).astype(NUMPY_TYPES[element])
        value = host_value(array)
        given = ort.OrtValue(value) if wrapped else value
        taken = rows_device.take(given, np.array(rows))
        assert type(taken) is type(given)  # the CPU path feeds C++ values, the CUDA path Python ones
        np.testing.assert_array_equal(taken.numpy(), array[rows])
        assert taken.numpy().dtype == array.dtype


def test_unknown_element_type_is_a_clear_error() -> None:
    with pytest.raises(GenerateError, match="4-D tensor\\(double\\)"):
        graph_path("tensor(double)", 4)
    with pytest.raises(GenerateError, match="3-D tensor\\(float\\)"):
        graph_path("tensor(float)", 3)


if __name__ == "__main__":
    for name in sorted(ONNX_TYPES):
        for rank in RANKS:
            out = graph_path(f"tensor({name})", rank)
            out.write_bytes(gather_rows_model(name, rank).SerializeToString())
            print(f"wrote {out}", file=sys.stderr)
