"""The portable target's packed copy of a model: the same logits and caches as the model as built,
fewer MatMuls in the graph, and no repeated cache for grouped-query attention."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
import torch

from nima.builders import build_model
from nima.export.decoder.graph import export_decoder
from nima.export.targets.portable import PackedSelfAttention, export_portable, packed_for_export
from nima.spec import ModelSpec, spec_from_dict

CASES = {
    # ALiBi's bias has a head axis: the grouped path splits it as it splits the queries
    "gqa-alibi": {"attention": {"n_heads": 4, "n_kv_heads": 2}, "position": {"kind": "alibi"}, "bias": True},
    "mqa-rope-qknorm": {"attention": {"n_heads": 4, "n_kv_heads": 1, "qk_norm": True}, "position": {"kind": "rope"}},
    "mha-local": {
        "attention": {"n_heads": 4, "pattern": {"kind": "local", "window": 3}},
        "position": {"kind": "learned"},
    },
}


def spec_for(name: str) -> ModelSpec:
    return spec_from_dict(
        {
            "name": f"packed-{name}",
            "vocab_size": 50,
            "max_seq_len": 32,
            "d_model": 32,
            "n_layers": 2,
            "ffn": {"kind": "swiglu", "hidden": 40},
            "norm": {"kind": "rmsnorm"},
            **CASES[name],
        }
    )


@pytest.mark.parametrize("name", list(CASES))
def test_same_logits_and_caches_as_the_model(name: str) -> None:
    """A left-padded prefill, then three cached steps, through both; the model as built is the reference."""
    spec = spec_for(name)
    model = build_model(spec, seed=1).eval()
    packed = packed_for_export(model)
    assert all(isinstance(b.attention, PackedSelfAttention) for b in packed.decoder.blocks)
    assert hasattr(model.decoder.blocks[0].attention, "q_proj"), "the caller's model must stay as it was"
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab_size, (2, 6), generator=generator)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # the second row is left-padded
    caches = [None, None]
    with torch.no_grad():
        for step in range(4):
            outputs = [m(ids, mask, None, cache) for m, cache in zip((model, packed), caches, strict=True)]
            (want, want_cache), (got, got_cache) = outputs
            assert torch.allclose(got, want, atol=1e-5, rtol=0), (step, (got - want).abs().max())
            for (wk, wv), (gk, gv) in zip(want_cache, got_cache, strict=True):
                assert torch.allclose(gk, wk, atol=1e-5, rtol=0) and torch.allclose(gv, wv, atol=1e-5, rtol=0)
            caches = [want_cache, got_cache]
            ids = want[:, -1:].argmax(-1)  # (2, 1)
            mask = torch.cat((mask, torch.ones(2, 1, dtype=torch.long)), dim=1)


def _ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def test_fewer_matmuls_and_no_repeated_cache(tmp_path: Path) -> None:
    spec = spec_for("gqa-alibi")
    model = build_model(spec, seed=0).eval()
    packed = _ops(export_portable(model, spec, tmp_path / "packed.onnx"))
    plain = _ops(export_decoder(model, spec, tmp_path / "plain.onnx"))
    # per layer: q, k, v -> one product; gate, up -> one product
    assert plain["MatMul"] - packed["MatMul"] == 3 * spec.n_layers
    assert packed["Split"] - plain["Split"] == 2 * spec.n_layers
    assert plain["Expand"] >= 2 * spec.n_layers, "the model's own graph repeats each layer's keys and values"
    assert packed["Expand"] < plain["Expand"] - 2 * spec.n_layers + 1


def test_an_encoder_decoder_packs_both_stacks() -> None:
    """Encoder and decoder blocks are packed; teacher-forced logits over a padded source batch are the model's."""
    spec = spec_from_dict(
        {
            "name": "packed-seq2seq",
            "architecture": "encoder-decoder",
            "n_encoder_layers": 2,
            "vocab_size": 50,
            "max_seq_len": 32,
            "d_model": 32,
            "n_layers": 2,
            "attention": {"n_heads": 4, "n_kv_heads": 2},
            "ffn": {"kind": "swiglu", "hidden": 40},
            "position": {"kind": "relative", "num_buckets": 8, "max_distance": 16},
            "norm": {"kind": "rmsnorm"},
        }
    )
    model = build_model(spec, seed=2).eval()
    packed = packed_for_export(model)
    for stack in (packed.encoder, packed.decoder):
        assert all(isinstance(b.attention, PackedSelfAttention) for b in stack.blocks)
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(0, spec.vocab_size, (2, 7), generator=generator)
    source_mask = torch.ones(2, 7, dtype=torch.long)
    source_mask[1, 5:] = 0
    target = torch.randint(0, spec.vocab_size, (2, 5), generator=generator)
    with torch.no_grad():
        want = model(source, target, source_mask)[0]
        got = packed(source, target, source_mask)[0]
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
