"""The ``ort`` target: a graph of ONNX Runtime's fused contrib ops, for ORT only.

Two ways in, chosen per model:

- ``gqa`` (the default): the model is exported through `nima.export.targets.ort.model`, whose
  self-attention is one packed QKV MatMul and one ``com.microsoft::GroupQueryAttention`` node
  per layer (rotary, cache append, grouped-query attention and the mask in one kernel), the
  graph onnxruntime-genai's own builder writes; then `nima.export.targets.ort.rules` fuses each norm
  with the residual add before it (SkipSimplifiedLayerNormalization, SkipLayerNormalization)
  and GELU with its bias (BiasGelu). ORT fuses what is left (SiLU) when a session loads the graph. onnxscript's full ORT
  rule set is not applied here: its FusedMatMul for a tied head measured slower than the plain
  MatMul that ORT makes by folding the transposed weight.
- ``rules`` (the fallback): the portable graph rewritten by the norm rules and onnxscript's ORT
  fusion rules (MultiHeadAttention, fused norms), for models the GroupQueryAttention kernel
  cannot run: see `gqa_blocker`.

The portable graph stays the default target: it runs on any ONNX runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from nima.builders.models import DecoderLM
from nima.export.decoder.graph import export_decoder
from nima.export.logits_to_keep import restore_input
from nima.export.options import gqa_blocker
from nima.export.parity import session_for
from nima.export.targets.ort.model import TRANSLATION_TABLE, fused_for_ort, plain_attention
from nima.export.targets.ort.rules import fuse_norms_and_gelu
from nima.spec import ModelSpec

_log = logging.getLogger("nima.export")


@dataclass(frozen=True)
class OrtExport:
    """How the ``ort`` graph was made: ``gqa`` or ``rules`` (with why), and the fusions applied."""

    method: str
    fusions: dict[str, int] = field(default_factory=dict)
    fallback_reason: str | None = None
    shared_cache: bool = False  # also runs with one preallocated past/present buffer (see `plain_attention`)


def export_for_ort(model: DecoderLM, spec: ModelSpec, path: Path, dtype: str = "fp32", opset: int = 18) -> OrtExport:
    """Write the ``ort`` target's graph of ``model`` at ``path``; ORT loading it is the check."""
    reason = gqa_blocker(spec, dtype)
    staged = path.with_name(path.stem + ".unfused.onnx")
    try:
        if reason is None:
            export_decoder(fused_for_ort(model, spec.max_seq_len), spec, staged, dtype, opset, TRANSLATION_TABLE)
            fusions = _rewrite(staged, path, fuse_norms_and_gelu)
            return OrtExport("gqa", {"GroupQueryAttention": spec.n_layers, **fusions}, None, plain_attention(model))
        # said by the caller's progress line (`nima.export.families`); logged, not printed, here
        _log.info("--target ort without GroupQueryAttention: %s; onnxscript's ORT fusion rules instead", reason)
        export_decoder(model, spec, staged, dtype, opset)
        return OrtExport("rules", fuse_for_ort(staged, path), reason)
    finally:
        for leftover in (staged, staged.with_name(staged.name + ".data")):
            leftover.unlink(missing_ok=True)


def fuse_for_ort(source: Path, target: Path) -> dict[str, int]:
    """Write ``source`` rewritten by onnxscript's ORT fusion rules to ``target``; return how often each fired."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    def fuse(model: ir.Model) -> dict[str, int]:
        norms = fuse_norms_and_gelu(model)  # first, so that onnxscript's rules see the norms they build on
        model, stats = optimize_for_ort(model)
        return {**norms, **stats}

    return _rewrite(source, target, fuse)


def _rewrite(source: Path, target: Path, rewrite: Callable[[ir.Model], dict[str, int]]) -> dict[str, int]:
    """Load ``source``, apply ``rewrite``, save to ``target``, check that ORT loads it; nonzero counts."""
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]  # their passes warn about our own inputs
    previous = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        model = ir.load(str(source))
        stats = rewrite(model)
        restore_input(model)  # the rules' passes take initializers out of the inputs, logits_to_keep's too
        RemoveUnusedNodesPass()(model)  # and the initializers only the replaced nodes read
        external = source.with_name(source.name + ".data").exists()  # weights past `dynamo.EXTERNAL_BYTES`
        ir.save(model, str(target), external_data=target.name + ".data" if external else None)
    finally:
        for logger, level in zip(quiet, previous, strict=True):
            logger.setLevel(level)
    # The fused ops are ORT's, in its com.microsoft domain, which onnx.checker passes over: it checks
    # the rest of the graph, and ORT building a session checks the fused ops.
    try:
        onnx.checker.check_model(str(target), full_check=True)
        session_for(target)  # errors only: ORT's notes (an input with a default is no constant) are not the user's
    except Exception:
        for written in (target, target.with_name(target.name + ".data")):  # no invalid graph left behind
            written.unlink(missing_ok=True)
        raise
    return {name: count for name, count in stats.items() if count}
