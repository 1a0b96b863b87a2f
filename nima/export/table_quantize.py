"""8-bit lookup tables for quantized bundles: the token embedding stored as int8 rows with one scale each.

A quantized bundle's MatMul weights are int8 or int4, but ONNX Runtime's quantizers leave ``Gather``
tables in fp32, and the token embedding is a large one: 98 MB of the 124M LLaMA-style model's
weights (32,000 x 768), a quarter of its int8 bundle. A step reads one row per token of it, so its
size costs memory, not time. `quantize_tables` stores each large table as int8 with a scale per
row (its largest magnitude / 127) and reads a row as ``Cast(Gather(q, ids)) * Gather(scale, ids)``:
four small ops on the few rows a step takes. Per row, the error is at most half a step of 1/127 of
the row's largest value, below the 7-bit MatMul weights' of the int8 bundle. A table that any node
besides its Gathers reads (an fp32 graph's tied head) is left as it is; the quantizers give a tied
head its own copy first (`nima.export.quantize.untie_head`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

MIN_TABLE_ELEMENTS = 1 << 18  # smaller tables (learned positions of a small model, relative biases) stay fp32


def quantize_tables(model: ir.Model) -> list[str]:
    """Store every large fp32 table that only Gathers read as int8 rows with per-row scales, in place; the
    names of the tables quantized."""
    graph = model.graph
    done = []
    for value in list(graph.initializers.values()):
        const = value.const_value
        if const is None or const.dtype != ir.DataType.FLOAT or len(const.shape) != 2:
            continue
        if const.size < MIN_TABLE_ELEMENTS:
            continue
        users = [node for node, index in value.uses()]
        if not users or any(node.op_type != "Gather" or node.inputs[0] is not value for node in users):
            continue
        if any(node.attributes.get_int("axis", 0) != 0 for node in users):
            continue
        table = const.numpy()  # (V, d)
        scale = np.abs(table).max(axis=1, keepdims=True) / 127.0  # (V, 1)
        scale[scale == 0] = 1.0  # an all-zero row stays zero
        q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)  # (V, d)
        q_value = _initializer(graph, f"{value.name}.int8", q)
        s_value = _initializer(graph, f"{value.name}.scale", scale.astype(np.float32))
        for gather in users:
            _dequantizing_gather(graph, gather, q_value, s_value)
        done.append(value.name)
    if done:
        RemoveUnusedNodesPass()(model)
        for name in done:  # no node reads the fp32 table any more
            graph.initializers.pop(name, None)
    return done


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def _dequantizing_gather(graph: ir.Graph, gather: ir.Node, q: ir.Value, scale: ir.Value) -> None:
    """Replace ``gather``'s output by Cast(Gather(q, ids)) * Gather(scale, ids): (..., d) float32."""
    ids = gather.inputs[1]
    rows = ir.node("Gather", [q, ids], attributes={"axis": 0})  # (..., d) int8
    wide = ir.node("Cast", [rows.outputs[0]], attributes={"to": ir.DataType.FLOAT})  # (..., d) fp32
    scales = ir.node("Gather", [scale, ids], attributes={"axis": 0})  # (..., 1)
    out = ir.node("Mul", [wide.outputs[0], scales.outputs[0]])  # (..., d)
    graph.insert_before(gather, [rows, wide, scales, out])
    old = gather.outputs[0]
    out.outputs[0].name = old.name
    old.name = f"{old.name}.fp32"
    old.replace_all_uses_with(out.outputs[0], replace_graph_outputs=True)
    graph.remove(gather, safe=True)
