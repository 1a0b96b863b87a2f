"""ONNX Runtime's ``com.microsoft::GroupQueryAttention`` as a torch custom op, for the ``ort`` target.

The op is declared to torch (``torch.ops.nima.group_query_attention``) with a reference
implementation written out in torch, and the dynamo exporter is told, through
``TRANSLATION_TABLE``, to write it as one GroupQueryAttention node. The node does in one kernel
what the portable graph spells out in dozens of ops: split the packed QKV projection, rotate
queries and keys (RoPE), append the new keys/values to the cache, attend with grouped-query
sharing and a causal mask plus an additive bias, and merge the heads.

How the kernel is driven (checked against ONNX Runtime 1.31's CPU kernel by tests/export/test_ort_target.py):

- ``seqlens_k[b] = past + new - 1`` for every row and ``total_sequence_length = past + new``:
  the kernel then lays the cache out by cache index, exactly as the portable graph does. Left
  padding is not expressed through ``seqlens_k`` (which describes right padding) but through
  ``attention_bias``: the stack's additive mask, which already holds padding, the attention
  pattern (local, sparse) and any position bias (ALiBi, relative).
- With ``do_rotary`` the kernel rotates by cache index, not by ``position_ids``. For a
  left-padded row the two differ by the row's padding count, a constant; RoPE scores depend
  only on the difference of two positions, so the logits are the same. The cached keys are
  rotated by cache index: they are meant for this graph only.
- A step with a cache and more than one new token needs batch 1 (a limit of the kernel).
"""

from __future__ import annotations

import onnx
import torch
from onnx.defs import OpSchema
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

INT32 = 6  # onnx.TensorProto.INT32


def _schema() -> OpSchema:
    """The part of ORT's GroupQueryAttention schema this export uses: onnxscript needs one to emit the node.

    onnx itself does not know ORT's contrib ops; the schema is built here, not registered globally.
    """
    optional = OpSchema.FormalParameterOption.Optional
    names = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]
    names += ["cos_cache", "sin_cache", "position_ids", "attention_bias"]
    types = {"seqlens_k": "M", "total_sequence_length": "M", "position_ids": "tensor(int64)"}
    required = {"query", "seqlens_k", "total_sequence_length"}
    inputs = [
        OpSchema.FormalParameter(n, types.get(n, "T"), param_option=OpSchema.FormalParameterOption.Single)
        if n in required
        else OpSchema.FormalParameter(n, types.get(n, "T"), param_option=optional)
        for n in names
    ]
    outputs = [OpSchema.FormalParameter(n, "T") for n in ("output", "present_key", "present_value")]
    ints, floats = OpSchema.AttrType.INT, OpSchema.AttrType.FLOAT
    return OpSchema(
        "GroupQueryAttention",
        "com.microsoft",
        1,
        inputs=inputs,
        outputs=outputs,
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[
            OpSchema.Attribute("num_heads", ints, required=True),
            OpSchema.Attribute("kv_num_heads", ints, required=True),
            OpSchema.Attribute("do_rotary", ints, required=False),
            OpSchema.Attribute("scale", floats, required=False),
            OpSchema.Attribute("softcap", floats, required=False),
        ],
    )


_GQA = Op(Opset("com.microsoft", 1), "GroupQueryAttention", _schema())


@torch.library.custom_op("nima::group_query_attention", mutates_args=())
def group_query_attention(
    qkv: torch.Tensor,  # (B, T, (H + 2 H_kv) hd): q, k, v projections side by side
    past_key: torch.Tensor,  # (B, H_kv, P, hd)
    past_value: torch.Tensor,  # (B, H_kv, P, hd)
    bias: torch.Tensor,  # (B, H|1, T, P+T) additive; batch B, the kernel reads lengths from it
    cos: torch.Tensor | None,  # (max_seq_len, hd/2) or None: no rotation
    sin: torch.Tensor | None,  # (max_seq_len, hd/2)
    num_heads: int,
    kv_num_heads: int,
    scale: float,
    softcap: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the kernel computes: attention output (B, T, H hd) and the grown cache (B, H_kv, P+T, hd) x 2."""
    b, t, width = qkv.shape
    hd = width // (num_heads + 2 * kv_num_heads)
    p = past_key.shape[2]
    heads = qkv.view(b, t, num_heads + 2 * kv_num_heads, hd).transpose(1, 2)  # (B, H + 2 H_kv, T, hd)
    q, k, v = heads.split([num_heads, kv_num_heads, kv_num_heads], dim=1)
    if cos is not None and sin is not None:
        angles = torch.arange(p, p + t, device=qkv.device)  # cache indices
        c = torch.cat((cos[angles], cos[angles]), -1)  # (T, hd)
        s = torch.cat((sin[angles], sin[angles]), -1)
        q, k = (_rotate(x, c, s) for x in (q, k))
    k = torch.cat((past_key, k), dim=2)  # (B, H_kv, P+T, hd)
    v = torch.cat((past_value, v), dim=2)
    rep = num_heads // kv_num_heads
    scores = q @ k.repeat_interleave(rep, dim=1).transpose(-2, -1) * scale  # (B, H, T, P+T)
    if softcap > 0.0:  # 0: none, as the kernel reads it
        scores = torch.tanh(scores / softcap) * softcap
    causal = torch.arange(p + t, device=qkv.device)[None, :] <= torch.arange(p, p + t, device=qkv.device)[:, None]
    scores = (scores + bias).masked_fill(~causal, float("-inf"))
    out = scores.softmax(-1) @ v.repeat_interleave(rep, dim=1)  # (B, H, T, hd)
    return out.transpose(1, 2).reshape(b, t, num_heads * hd), k, v


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin  # rotate_half layout


@group_query_attention.register_fake
def _(
    qkv: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    bias: torch.Tensor,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    num_heads: int,
    kv_num_heads: int,
    scale: float,
    softcap: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, t, width = qkv.shape
    hd = width // (num_heads + 2 * kv_num_heads)
    total = past_key.shape[2] + t
    present = past_key.new_empty((b, kv_num_heads, total, hd))
    return qkv.new_empty((b, t, num_heads * hd)), present, torch.empty_like(present)


def _onnx_group_query_attention(  # noqa: ANN202 - onnxscript values
    qkv,  # noqa: ANN001
    past_key,  # noqa: ANN001
    past_value,  # noqa: ANN001
    bias,  # noqa: ANN001
    cos,  # noqa: ANN001
    sin,  # noqa: ANN001
    num_heads: int,
    kv_num_heads: int,
    scale: float,
    softcap: float,
):
    """The GroupQueryAttention node, with the sequence lengths derived from the shapes.

    The lengths are read off ``bias`` (B, H|1, T, P+T), which every layer shares, so ORT's
    common-subexpression elimination computes them once per step rather than once per layer.
    """
    sizes = op.Cast(op.Shape(bias), to=INT32)  # (4,): B, H|1, T, past + new
    total_scalar = op.Gather(sizes, op.Constant(value_int=3))  # int32 scalar: past + new
    one = op.Constant(value=onnx.helper.make_tensor("one", INT32, [], [1]))
    seqlens_k = op.Expand(op.Sub(total_scalar, one), op.Shape(bias, start=0, end=1))  # (B,) int32
    return _GQA(
        qkv,
        None,
        None,
        past_key,
        past_value,
        seqlens_k,
        total_scalar,
        cos,
        sin,
        None,
        bias,
        num_heads=num_heads,
        kv_num_heads=kv_num_heads,
        do_rotary=0 if cos is None else 1,
        scale=scale,
        softcap=softcap,
    )


TRANSLATION_TABLE = {torch.ops.nima.group_query_attention.default: _onnx_group_query_attention}
