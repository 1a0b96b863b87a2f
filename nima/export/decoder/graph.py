"""torch -> ONNX for a decoder: one graph, ``model.onnx``, for prefill and cached steps (see `contract`).

Each target (`nima.export.targets`) hands this a model of its own form (packed projections,
fused attention) and, for custom ops, the functions that write them; the contract's wrapper,
example inputs and symbolic dimensions are the same for every target. Every decoder graph gets
the optional ``logits_to_keep`` input (`nima.export.logits_to_keep`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx_ir as ir
from torch import nn

from nima.export.decoder.contract import DecoderForExport, dynamic_shapes, example_inputs, input_names, output_names
from nima.export.dynamo import DTYPES, export_module, in_dtype
from nima.export.errors import ExportError
from nima.export.logits_to_keep import add_logits_to_keep
from nima.spec import ModelSpec


def export_decoder(
    model: nn.Module,
    spec: ModelSpec,
    path: Path,
    dtype: str = "fp32",
    opset: int = 18,
    translations: dict[Callable, Callable] | None = None,
) -> Path:
    """Write ``model`` as an ONNX graph at ``path`` (in ``dtype``) and return the path.

    ``translations`` maps custom torch ops in ``model`` to the onnxscript functions that write
    them (the ``ort`` target's fused attention); the portable export has none. The graph gets the
    optional ``logits_to_keep`` input (`nima.export.logits_to_keep`).
    """
    model = in_dtype(model, dtype)
    args = example_inputs(spec.n_layers, spec.n_kv_heads, spec.head_dim, spec.vocab_size, DTYPES[dtype])
    names = (input_names(spec.n_layers), output_names(spec.n_layers))
    shapes = dynamic_shapes(spec.n_layers)
    return export_module(DecoderForExport(model), args, shapes, names, path, opset, translations, _keep_logits)


def _keep_logits(model: ir.Model) -> None:
    """`add_logits_to_keep`, which every decoder Nima builds takes (its logits come from the head's
    MatMul): a graph that does not is an exporter change the tests must see, not a silent slowdown."""
    if not add_logits_to_keep(model):
        raise ExportError("the exported logits do not come from a MatMul of the head's weights: no logits_to_keep")
