"""Rewrite rules for the ``ort`` target: norms and GELU into ONNX Runtime's fused ops.

`nima.builders.norms.RMSNorm` is written ``x / sqrt(mean(x^2) + eps) * g`` because ORT fuses
that form by itself when a session loads a graph. onnxscript's RMSNorm rule only knows the
``x * reciprocal(sqrt(.))`` form, so without this rule the graph reaches onnxscript's later
rules with no SimplifiedLayerNormalization in it, and the residual add before each norm is
never fused with it into SkipSimplifiedLayerNormalization (which ORT does not do at load).
The other rules are onnxscript's: the residual add into the norm after it, GELU's erf form
into Gelu, and a MatMul's bias into it (BiasGelu).

A norm that no residual add was fused into (the first block's, after the embedding; qk-norm's
two per layer) is written back as the standard ops it came from (`LoneRmsNormToStandardOps`):
SimplifiedLayerNormalization is registered by ORT in the ONNX domain, where ``onnx.checker``
rejects it as an unknown op, and ORT fuses the standard form back into it when a session loads
the graph. In fp32 graphs ORT then runs the same graph as before (the tests count it); in fp16
graphs it runs Cast, an fp32 SimplifiedLayerNormalization and Cast where it ran one node.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import _ir_utils, pattern
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
from onnxscript.rewriter.ort_fusions.gelu import fuse_gelu
from onnxscript.rewriter.ort_fusions.skip_normalization import (
    fuse_skip_layer_normalization,
    fuse_skip_rms_normalization,
)

FLOAT_TYPES = frozenset([ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE])


class DivRmsNormFusion(pattern.RewriteRuleClassBase):
    """``Mul(Cast?(Div(x32, Sqrt(Add(ReduceMean(Pow(x32, 2)), eps)))), g)`` -> SimplifiedLayerNormalization."""

    def pattern(self, op, x, scale, epsilon, compute_dtype, target_dtype):  # noqa: ANN001, ANN201 - pattern values
        x32 = pattern.OrValue([op.Cast(x, to=compute_dtype), x])  # x.float(): absent in fp32 graphs
        mean_square = op.ReduceMean(op.Pow(x32, 2.0), [-1], keepdims=1, noop_with_empty_axes=0)  # (B, T, 1)
        normalized = op.Div(x32, op.Sqrt(op.Add(mean_square, epsilon)))  # (B, T, D)
        normalized = pattern.OrValue([op.Cast(normalized, to=target_dtype), normalized])  # .to(x.dtype)
        return op.Mul(normalized, scale)

    def check(self, op, x, scale, epsilon, compute_dtype, **_) -> pattern.MatchResult:  # noqa: ANN001
        result = pattern.MatchResult()
        if not isinstance(_ir_utils.get_singleton_value(epsilon), float):
            return result.fail("epsilon is not a float constant", epsilon)
        if x.dtype not in FLOAT_TYPES or scale.dtype not in FLOAT_TYPES:
            return result.fail("input or scale is not a float tensor")
        stash = compute_dtype.as_int() if compute_dtype is not None else x.dtype
        if stash not in (ir.DataType.FLOAT, ir.DataType.DOUBLE):
            return result.fail("statistics are not computed in float or double")
        return result

    def rewrite(self, op, x, scale, epsilon, compute_dtype, **_):  # noqa: ANN001, ANN201
        stash = compute_dtype.as_int() if compute_dtype is not None else x.dtype
        # SimplifiedLayerNormalization is ORT's op, registered in the default domain.
        return op.SimplifiedLayerNormalization(
            x, scale, axis=-1, epsilon=_ir_utils.get_singleton_value(epsilon), stash_type=int(stash)
        )


RULES = pattern.RewriteRuleSet([DivRmsNormFusion.rule("DivRmsNormFusion")])


class LoneRmsNormToStandardOps(pattern.RewriteRuleClassBase):
    """SimplifiedLayerNormalization -> ``Mul(Cast?(Div(x32, Sqrt(Add(ReduceMean(Pow(x32, 2)), eps)))), g)``,
    the form `DivRmsNormFusion` matched (see the module docstring)."""

    def pattern(self, op, x, scale):  # noqa: ANN001, ANN201 - pattern values
        return op.SimplifiedLayerNormalization(x, scale, axis=-1, _allow_other_attributes=True, _outputs=["normed"])

    def check(self, op, x, normed, **_) -> pattern.MatchResult:  # noqa: ANN001
        result = pattern.MatchResult()
        if x.dtype not in FLOAT_TYPES:
            return result.fail("input is not a float tensor")
        if len(normed.producer().outputs) > 1 and any(out.uses() for out in normed.producer().outputs[1:]):
            return result.fail("the norm's statistics outputs are used")
        return result

    def rewrite(self, op, x, scale, normed, **_):  # noqa: ANN001, ANN201
        attributes = normed.producer().attributes
        epsilon = attributes.get_float("epsilon", 1e-5)
        stash = ir.DataType(attributes.get_int("stash_type", 1))
        x32 = x if x.dtype == stash else op.Cast(x, to=stash)
        mean_square = op.ReduceMean(op.Pow(x32, op.Constant(value_float=2.0)), op.Constant(value_ints=[-1]), keepdims=1)
        eps = op.Constant(value=ir.tensor([epsilon], dtype=stash))
        normalized = op.Div(x32, op.Sqrt(op.Add(mean_square, eps)))  # (B, T, D)
        if x.dtype != stash:
            normalized = op.Cast(normalized, to=x.dtype)
        return op.Mul(normalized, scale)


LONE_NORM_RULES = pattern.RewriteRuleSet([LoneRmsNormToStandardOps.rule("LoneRmsNormToStandardOps")])


def fuse_norms_and_gelu(model: ir.Model) -> dict[str, int]:
    """Fuse ``model``'s norms and GELUs in place; return how many of each fusion were made.

    RMSNorm first (this module's rule), then onnxscript's rules that merge the residual add
    before a norm into it: SkipSimplifiedLayerNormalization (RMSNorm) and SkipLayerNormalization
    (LayerNorm, which the exporter already writes as one LayerNormalization node); then GELU
    (exact and tanh forms) and the bias add before it; last, the norms left alone go back to
    standard ops, which ORT fuses at load (the module docstring says why).
    """
    RULES.apply_to_model(model)
    counts = {
        "SkipSimplifiedLayerNormalization": fuse_skip_rms_normalization(model),
        "SkipLayerNormalization": fuse_skip_layer_normalization(model),
        "Gelu": fuse_erfgelu(model) + fuse_gelu(model),
        "BiasGelu": fuse_bias_gelu(model),
    }
    counts["RMSNorm left for ORT to fuse at load"] = LONE_NORM_RULES.apply_to_model(model)
    return counts
