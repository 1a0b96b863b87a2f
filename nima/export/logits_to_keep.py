"""An optional ``logits_to_keep`` input: the output head runs on the last positions only.

A generation loop reads the logits of the last position of a prompt, never the others, yet a
graph that maps every position through the output head computes (B, T, V) logits at the
prefill: 38% of a 10M model's 32-token prefill time (its 24k x 256 head holds two thirds of
its weights), 57% at 256 tokens, 13-24% of a 124M model's (bench/prefill.py), and a long,
batched prompt's logits run to hundreds of MB. This pass adds the input Hugging Face
transformers gives its models for the same reason (``logits_to_keep``: a scalar, keep the last
k positions; 0 keeps all) and a ``Slice`` of the head's input on the sequence axis, so the
head's MatMul sees only the kept positions.

The input has an initializer of the same name holding 0, which ONNX Runtime treats as an
overridable default: a caller that does not feed it (onnxruntime-genai, Optimum, the export
check) gets every position's logits, as the decoder contract says; Nima's runtime feeds 1.
The logits' sequence axis gets its own name, ``logits_sequence_length``: it is the input's
sequence length unless the input keeps fewer.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from nima.layout import LOGITS, LOGITS_TO_KEEP

# Ops between the head's MatMul and the logits output that act on each position alone (a bias,
# a scale, soft-capping, a cast), so slicing positions before the MatMul commutes with them.
PER_POSITION = frozenset({"Add", "Sub", "Mul", "Div", "Tanh", "Cast", "Identity"})
INT64_MAX = np.iinfo(np.int64).max


def _constant(value: ir.Value) -> bool:
    """An initializer, a Constant node's output, or a Transpose of either (a tied head's weight)."""
    if value.const_value is not None:
        return True
    producer = value.producer()
    if producer is None:
        return False
    if producer.op_type == "Constant":
        return True
    return producer.op_type == "Transpose" and producer.inputs[0] is not None and _constant(producer.inputs[0])


def head_path(graph: ir.Graph) -> list[ir.Node]:
    """The MatMul of constant weights that makes the logits, then the per-position ops from it to the
    ``logits`` output; empty when the graph has no such head."""
    outputs = [value for value in graph.outputs if value.name == LOGITS]
    node = outputs[0].producer() if outputs else None
    after: list[ir.Node] = []
    while node is not None and node.op_type in PER_POSITION:
        after.insert(0, node)
        variable = [value for value in node.inputs if value is not None and not _constant(value)]
        if len(variable) != 1:
            return []
        node = variable[0].producer()
    if node is None or node.op_type != "MatMul" or not _constant(node.inputs[1]):
        return []
    return [node, *after]


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """An int64 initializer ``name`` holding ``array``, registered in ``graph``."""
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.INT64))
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def add_logits_to_keep(model: ir.Model) -> bool:
    """Add the optional ``logits_to_keep`` input to a decoder graph (see the module docstring);
    k must be >= 0 (a negative k would drop the first |k| positions).

    Returns False, leaving the graph as it was, when no head MatMul is found."""
    graph = model.graph
    if LOGITS_TO_KEEP in graph.initializers:
        raise ValueError(f"the graph already has {LOGITS_TO_KEEP}")
    path = head_path(graph)
    if not path:
        return False
    head = path[0]
    keep = _initializer(graph, LOGITS_TO_KEEP, np.array(0, dtype=np.int64))  # () : 0 keeps every position
    graph.inputs.append(keep)
    one = _initializer(graph, "logits_to_keep_shape", np.array([1], dtype=np.int64))
    ends = _initializer(graph, "logits_to_keep_ends", np.array([INT64_MAX], dtype=np.int64))
    axes = _initializer(graph, "logits_to_keep_axes", np.array([1], dtype=np.int64))
    hidden = head.inputs[0]  # (B, T, d_model)
    negated = ir.node("Neg", [keep], name="logits_to_keep_neg")
    starts = ir.node("Reshape", [negated.outputs[0], one], name="logits_to_keep_starts")  # (1,): -k
    kept = ir.node("Slice", [hidden, starts.outputs[0], ends, axes], name="logits_to_keep_slice")  # (B, T', d)
    kept.outputs[0].dtype = hidden.dtype
    graph.insert_before(head, [negated, starts, kept])
    head.replace_input_with(0, kept.outputs[0])
    kept.outputs[0].shape = _kept_shape(hidden.shape)
    for node in path:  # the head and what follows it to the logits now see the kept positions only
        for value in node.outputs:
            value.shape = _kept_shape(value.shape)
    return True


def _kept_shape(shape: ir.Shape | None) -> ir.Shape | None:
    """(B, T, X) with the sequence axis renamed; other shapes unknown (ORT infers them)."""
    if shape is None or len(shape) != 3:
        return None
    return ir.Shape([shape[0], "logits_sequence_length", shape[2]])


def restore_input(model: ir.Model) -> None:
    """List the ``logits_to_keep`` initializer among the graph inputs again where a rewrite dropped it
    (onnxscript's ORT fusions remove initializers from the inputs), so it stays overridable."""
    graph = model.graph
    value = graph.initializers.get(LOGITS_TO_KEEP)
    if value is not None and all(v is not value for v in graph.inputs):
        graph.inputs.append(value)
