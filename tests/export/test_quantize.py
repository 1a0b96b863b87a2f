"""`nima.export.quantize` on a one-MatMul graph: the weights are quantized, and onnxruntime's
quantizers neither print a line per node nor leave the process's root logger changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nima.export.quantize import quantize


def _matmul_graph(path: Path) -> np.ndarray:
    """x (1, 64) @ W (64, 96), W an initializer; returns W."""
    weight = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "one-matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 96])],
        [numpy_helper.from_array(weight, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return weight


@pytest.mark.parametrize(
    ("kind", "ort_kernels", "op"),
    [("int8", False, "MatMulInteger"), ("int8", True, "MatMulNBits"), ("int4", False, "MatMulNBits")],
)
def test_weights_are_quantized_and_close(kind: str, ort_kernels: bool, op: str, tmp_path: Path) -> None:
    weight = _matmul_graph(tmp_path / "fp32.onnx")
    quantize(tmp_path / "fp32.onnx", tmp_path / "q.onnx", kind, ort_kernels=ort_kernels)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert {node.op_type for node in graph.node} & {"MatMulInteger", "MatMulNBits"} == {op}
    if op == "MatMulInteger":  # 7-bit weights (reduce_range): ORT's AVX2 uint8 x int8 kernel saturates on 8
        weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        quantized = [weights[n.input[1]] for n in graph.node if n.op_type == "MatMulInteger"]
        assert quantized and all(w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 64 for w in quantized)
    else:  # int8 compute inside the kernel on CPUs (accuracy_level 4); 8 bits in blocks of 128, 4 in blocks of 32
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
        expected = (8, 128) if kind == "int8" else (4, 32)
        assert attributes["accuracy_level"] == 4 and (attributes["bits"], attributes["block_size"]) == expected
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = x @ weight
    bound = 0.02 if kind == "int8" and ort_kernels else 0.1  # 8-bit weights, activations per block of 64 here
    assert np.abs(got - want).max() / np.abs(want).max() < bound


def test_quantizing_leaves_logging_alone(tmp_path: Path) -> None:
    """In a fresh interpreter, so the quantizer modules are imported by `quantize` itself."""
    _matmul_graph(tmp_path / "fp32.onnx")
    script = (
        "import logging, sys; from pathlib import Path; from nima.export.quantize import quantize\n"
        "root = logging.getLogger(); before = (root.level, list(root.handlers))\n"
        "source = Path(sys.argv[1])\n"
        "for kind in ('int4', 'int8'): quantize(source, source.with_name(kind + '.onnx'), kind)\n"
        "print(before == (root.level, list(root.handlers)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "fp32.onnx")], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"  # the root logger's level and handlers are as they were
    assert "INFO" not in done.stderr and "quantiz" not in done.stderr, done.stderr
