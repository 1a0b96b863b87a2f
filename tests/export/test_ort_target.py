"""The ``ort`` target: GroupQueryAttention graphs that match PyTorch on left-padded batches.

Each model is exported with `export_for_ort` and held to the export-time parity check (a
left-padded batch, prefill and 8 cached steps, fp32 tolerance 1e-4), and its graph must really
hold the fused ops: one GroupQueryAttention per layer, one packed QKV MatMul, no Softmax.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from bundle_helpers import invoke

from nima.builders import build_model, save_build
from nima.builders.attention import SelfAttention
from nima.export.decoder.contract import DecoderForExport, input_names, output_names
from nima.export.decoder.parity import check_parity
from nima.export.parity import session_for
from nima.export.targets.ort.export import OrtExport, export_for_ort
from nima.export.targets.ort.model import FusedSelfAttention, fused_for_ort
from nima.export.targets.portable import PackedGatedMLP
from nima.layout import LOGITS_TO_KEEP
from nima.spec import ModelSpec, spec_from_dict

BASE: dict[str, Any] = {
    "vocab_size": 61,
    "max_seq_len": 48,
    "d_model": 64,  # 4 heads of 16: ORT's CPU kernel needs head sizes that are multiples of 16
    "n_layers": 2,
    "init": {"kind": "normal", "std": 0.2, "scaled_residual": False},
}
LLAMA = {
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "ffn": {"kind": "swiglu", "hidden": 96},
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm"},
    "bias": False,
}
GPT2 = {
    "attention": {"n_heads": 4, "n_kv_heads": 4},
    "ffn": {"kind": "gelu", "hidden": 128},
    "position": {"kind": "learned"},
    "norm": {"kind": "layernorm"},
    "bias": True,
    "tie_embeddings": True,
}
# Variants whose attention differs from plain causal: all go through the kernel's attention_bias.
VARIANTS = {
    "alibi-local-mqa": {
        **LLAMA,
        "attention": {"n_heads": 4, "n_kv_heads": 1, "pattern": {"kind": "local", "window": 3}},
        "position": {"kind": "alibi"},
    },
    "relative-sparse-postnorm": {
        **GPT2,
        "attention": {"n_heads": 4, "n_kv_heads": 2, "pattern": {"kind": "sparse", "window": 2, "stride": 3}},
        "position": {"kind": "relative"},
        "norm": {"kind": "rmsnorm", "placement": "post"},
    },
    "rope-qknorm": {**LLAMA, "attention": {"n_heads": 4, "n_kv_heads": 1, "qk_norm": True}},
    "sinusoidal-geglu": {
        **LLAMA,
        "position": {"kind": "sinusoidal", "layout": "split"},
        "ffn": {"kind": "geglu", "hidden": 96},
    },
    # T5's unscaled attention and scaled head input; BART's offset table, embedding norm and logit bias
    "relative-unscaled": {
        **LLAMA,
        "attention": {"n_heads": 4, "n_kv_heads": 2, "scale": 1.0},
        "position": {"kind": "relative"},
        "output_scale": 0.125,
    },
    "learned-offset-embedding-norm": {
        **GPT2,
        "attention": {"n_heads": 4, "scale": 0.3},
        "position": {"kind": "learned", "offset": 2},
        "norm": {"kind": "layernorm", "placement": "post", "embedding": True},
        "ffn": {"kind": "silu", "hidden": 128},
        "output_bias": True,
    },
}
VARIANTS["gemma2-like"] = {
    **LLAMA,
    "attention": {
        "n_heads": 4,
        "n_kv_heads": 2,
        "scale": 0.2,
        "softcap": 3.0,
        "pattern": [{"kind": "local", "window": 4}, {"kind": "full"}],
    },
    "norm": {"kind": "rmsnorm", "placement": "sandwich", "offset": 1.0},
    "logit_softcap": 5.0,
    "scale_embeddings": True,
}
PLAIN = ("rope-qknorm", "sinusoidal-geglu", "learned-offset-embedding-norm")  # no pattern, no position bias


def make_spec(family: dict[str, Any], **overrides: Any) -> ModelSpec:
    return spec_from_dict({**BASE, **family, **overrides})


def ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def export_and_check(spec: ModelSpec, tmp_path: Path, seed: int = 0) -> tuple[OrtExport, Counter[str]]:
    """Export the ort target, hold it to the parity check, return how it was made and its op counts."""
    model = build_model(spec, seed=seed).eval()
    path = tmp_path / "model.onnx"
    how = export_for_ort(model, spec, path)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)  # contrib ops only in com.microsoft, which it skips
    assert [i.name for i in graph.graph.input] == [*input_names(spec.n_layers), LOGITS_TO_KEEP]  # the last: optional
    assert [o.name for o in graph.graph.output] == output_names(spec.n_layers)
    report = check_parity(model, spec, session_for(path, threads=1), batch=3, decode_steps=8, seed=seed)
    assert report.prompt_lengths[0] > report.prompt_lengths[-1]  # the batch really is left-padded
    assert report.max_abs_diff <= 1e-4, report.describe()
    assert report.next_token_agreement == 1.0, report.describe()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no staged graph left behind
    return how, ops(path)


@pytest.mark.parametrize("family", [LLAMA, GPT2], ids=["llama-style", "gpt2-style"])
def test_gqa_graph_matches_pytorch_on_left_padded_batches(family: dict[str, Any], tmp_path: Path) -> None:
    spec = make_spec(family)
    how, counts = export_and_check(spec, tmp_path)
    assert how.method == "gqa" and how.shared_cache
    assert counts["GroupQueryAttention"] == spec.n_layers
    assert counts["Softmax"] == 0  # no attention arithmetic left outside the kernel
    # per layer: packed QKV, output projection, the FFN's two (gate and up packed in one); plus the head
    assert counts["MatMul"] == spec.n_layers * 4 + 1
    # the padding bias is one comparison of the mask with itself, computed once for all layers
    assert counts["GreaterOrEqual"] == 1 and counts["Not"] == 0 and counts["Or"] == 0
    # plain attention: the bias is the padding alone, the stack's mask (Range, Abs, ...) is gone
    assert counts["Range"] == 0 and counts["Abs"] == 0
    norm = "SkipSimplifiedLayerNormalization" if spec.norm.kind == "rmsnorm" else "SkipLayerNormalization"
    assert counts[norm] >= spec.n_layers  # the residual add fused into the norm after it
    if spec.norm.kind == "rmsnorm":  # the first norm is written as standard ops, and ORT fuses it at load
        assert counts["SimplifiedLayerNormalization"] == 0 and counts["ReduceMean"] == 1
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(tmp_path / "model.onnx"), options, providers=["CPUExecutionProvider"])
        loaded = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
        assert loaded["SimplifiedLayerNormalization"] == 1 and loaded["ReduceMean"] == 0
    if spec.ffn.kind == "gelu":
        assert counts["BiasGelu"] == spec.n_layers


@pytest.mark.parametrize("name", list(VARIANTS))
def test_gqa_serves_masked_and_biased_variants(name: str, tmp_path: Path) -> None:
    """Patterns, ALiBi and relative bias reach the kernel as its attention_bias; qk-norm rotates outside it."""
    spec = make_spec(VARIANTS[name])
    how, counts = export_and_check(spec, tmp_path, seed=len(name))
    assert how.method == "gqa"
    # lengths come from the stack's mask, built over the cache's shape: no shared buffer
    assert how.shared_cache == (name in PLAIN)
    assert counts["GroupQueryAttention"] == spec.n_layers


def test_unsupported_head_size_falls_back_to_fusion_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec(LLAMA, d_model=32)  # head_dim 8
    model = build_model(spec, seed=0).eval()
    with caplog.at_level(logging.WARNING):
        how = export_for_ort(model, spec, tmp_path / "model.onnx")
    # the caller says it once (its progress line); no warnings printed beside it, the passes' own neither
    assert not caplog.records, [record.getMessage() for record in caplog.records]
    assert how.method == "rules"
    assert how.fallback_reason is not None and "head_dim 8" in how.fallback_reason
    counts = ops(tmp_path / "model.onnx")
    assert counts["GroupQueryAttention"] == 0 and counts["MultiHeadAttention"] == spec.n_layers
    onnx.checker.check_model(str(tmp_path / "model.onnx"), full_check=True)
    report = check_parity(model, spec, session_for(tmp_path / "model.onnx", threads=1))
    assert report.max_abs_diff <= 1e-4, report.describe()


def test_fused_model_in_torch_equals_the_model() -> None:
    """The custom op's torch implementation (what the exporter traces) computes what the builders do:
    a left-padded prefill, then a cached step of several tokens, each model feeding back its own
    cache. The caller's model is left as it was."""
    spec = make_spec(LLAMA)
    model = build_model(spec, seed=1).eval()
    fused = fused_for_ort(model, spec.max_seq_len)
    assert all(isinstance(b.attention, FusedSelfAttention) for b in fused.model.decoder.blocks)
    assert all(isinstance(b.ffn, PackedGatedMLP) for b in fused.model.decoder.blocks)
    assert all(isinstance(b.attention, SelfAttention) for b in model.decoder.blocks)
    b, p, t = 3, 6, 3
    mask = torch.ones(b, p + t, dtype=torch.long)
    mask[1, :2] = 0
    mask[2, :5] = 0  # left padding
    ids = torch.randint(0, spec.vocab_size, (b, p + t), generator=torch.Generator().manual_seed(0))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    empty = (b, spec.n_kv_heads, 0, spec.head_dim)
    outputs = []
    for m in (model, fused):
        past = [(torch.zeros(empty), torch.zeros(empty)) for _ in range(spec.n_layers)]
        with torch.no_grad():
            prefill = DecoderForExport(m)(ids[:, :p], mask[:, :p], positions[:, :p], past)
            cache = list(zip(prefill[1::2], prefill[2::2], strict=True))
            step = DecoderForExport(m)(ids[:, p:], mask, positions[:, p:], cache)
        outputs.append((prefill, step))
    (want_prefill, want_step), (got_prefill, got_step) = outputs
    assert (got_prefill[0] - want_prefill[0])[mask[:, :p].bool()].abs().max() < 1e-5
    assert (got_step[0] - want_step[0])[mask[:, p:].bool()].abs().max() < 1e-5
    # The cache at real tokens: values equal; keys are rotated by cache index, which differs from
    # the position id by a row's padding, so they are equal in the unpadded row only. (Padding
    # positions hold whatever padding queries computed: nothing real attends to them.)
    real = mask.bool()  # (B, P+T)
    for want, got in zip(want_step[2::2], got_step[2::2], strict=True):
        assert torch.allclose(want.transpose(1, 2)[real], got.transpose(1, 2)[real], atol=1e-5)
    assert torch.allclose(want_step[1][0], got_step[1][0], atol=1e-5)
    assert not torch.allclose(want_step[1][2], got_step[1][2], atol=1e-3)


def test_fp16_ort_export_within_tolerance(tmp_path: Path) -> None:
    spec = make_spec(LLAMA, init={"kind": "normal", "std": 0.02})
    model = build_model(spec, seed=0).eval()
    how = export_for_ort(model, spec, tmp_path / "model.onnx", dtype="fp16")
    assert how.method == "gqa"
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    onnx.checker.check_model(graph, full_check=True)
    report = check_parity(model, spec, session_for(tmp_path / "model.onnx", threads=1), dtype="fp16")
    assert report.passed, report.describe()


def test_genai_runs_the_gqa_bundle(tmp_path: Path) -> None:
    """`nima export --target ort` on a GQA-capable model: onnxruntime-genai decodes what PyTorch does."""
    og = pytest.importorskip("onnxruntime_genai")
    spec = make_spec(LLAMA, init={"kind": "normal", "std": 0.2})
    model = build_model(spec, seed=4).eval()
    source = save_build(model, spec, tmp_path / "model")
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", source, "-o", out, "--target", "ort")
    assert result.exit_code == 0, result.output
    assert ops(out / "model.onnx")["GroupQueryAttention"] == spec.n_layers
    # plain attention: genai appends to one preallocated cache buffer, as with its own graphs
    assert json.loads((out / "genai_config.json").read_text())["search"]["past_present_share_buffer"] is True
    prompt = [5, 9, 17, 33, 2]
    genai = og.Model(str(out))
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=30, do_sample=False)
    generator = og.Generator(genai, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    got = [int(t) for t in generator.get_sequence(0)]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(30 - len(prompt)):
            ids = torch.cat([ids, model(ids)[0][:, -1:].argmax(-1)], dim=1)
    assert got == ids[0].tolist()


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantized_ort_export_within_tolerance(kind: str, trained_dir: Path, tmp_path: Path) -> None:
    """Quantization starts from the fused graph as it does from the portable one; export verifies it."""
    out = tmp_path / kind
    result = invoke("export", "--onnx", trained_dir, "-o", out, "--target", "ort", "--quantize", kind)
    assert result.exit_code == 0, result.output
    counts = ops(out / "model.onnx")
    assert counts["GroupQueryAttention"] == 2
    assert counts["MatMulNBits"] > 0 and counts["MatMulInteger"] == 0  # int8 too: ORT's 8-bit MatMulNBits
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
