"""Which keys each query may see under left padding, as a torch custom op with a short ONNX form.

For plain attention the ``ort`` graph's only mask is left padding: a real query sees real keys
only, a padding query sees every key (its output is never used, but an all-masked row would
put NaN into the cache the next layer reads). With a 0/1 ``attention_mask`` both rules are one
comparison, ``mask[key] >= mask[query]``. Written in torch, the slice of the last ``T`` mask
entries comes out of the dynamo exporter as a dozen ops on symbolic sizes; the translation
below writes the six this needs, once per step for all layers.
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op

INT64_MAX = 2**63 - 1


@torch.library.custom_op("nima::padding_allowed", mutates_args=())
def padding_allowed(
    attention_mask: torch.Tensor,  # (B, P+T) int64, 1 real, 0 padding
    input_ids: torch.Tensor,  # (B, T): only its length is read
) -> torch.Tensor:
    """(B, 1, T, P+T) bool: True where query t (the last T cache slots) may attend to key s."""
    t = input_ids.shape[1]
    key = attention_mask[:, None, None, :]  # (B, 1, 1, P+T)
    query = attention_mask[:, -t:][:, None, :, None]  # (B, 1, T, 1)
    return key >= query


@padding_allowed.register_fake
def _(attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    b, total = attention_mask.shape
    return attention_mask.new_empty((b, 1, input_ids.shape[1], total), dtype=torch.bool)


def _onnx_padding_allowed(attention_mask, input_ids):  # noqa: ANN001, ANN202 - onnxscript values
    key = op.Unsqueeze(attention_mask, op.Constant(value_ints=[1, 2]))  # (B, 1, 1, P+T)
    start = op.Neg(op.Shape(input_ids, start=1, end=2))  # (1,): -T
    last = op.Slice(attention_mask, start, op.Constant(value_ints=[INT64_MAX]), op.Constant(value_ints=[1]))
    query = op.Unsqueeze(last, op.Constant(value_ints=[1, 3]))  # (B, 1, T, 1)
    return op.GreaterOrEqual(key, query)  # (B, 1, T, P+T)


TRANSLATION_TABLE = {torch.ops.nima.padding_allowed.default: _onnx_padding_allowed}
