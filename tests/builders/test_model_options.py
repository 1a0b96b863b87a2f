"""Model-level options against their formulas: the output head's scale and bias, and the norm of the
embeddings before the first block. Each is checked at its place in the model through hooks, the
surrounding computation written out here with plain torch.functional calls."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nima.builders import build_model
from nima.spec import spec_from_dict

BASE = {
    "vocab_size": 23,
    "max_seq_len": 16,
    "d_model": 8,
    "n_layers": 1,
    "attention": {"n_heads": 2},
    "ffn": {"kind": "gelu", "hidden": 16},
    "position": {"kind": "learned", "offset": 2},
    "init": {"kind": "normal", "std": 0.3, "scaled_residual": False},
}


def test_output_scale_and_bias() -> None:
    """logits = (scale h) W^T + b: T5's tied head reads h d_model^-0.5; BART adds final_logits_bias."""
    spec = spec_from_dict(BASE | {"output_scale": 8**-0.5, "output_bias": True})
    model = build_model(spec, seed=1).eval()
    with torch.no_grad():
        model.head.bias.normal_(0.0, 1.0)
    assert model.head.weight is model.embedding.weight  # tied, the bias its own
    seen = []
    model.decoder.final_norm.register_forward_hook(lambda m, i, out: seen.append(out))
    ids = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(ids)
    expected = seen[0] * 8**-0.5 @ model.embedding.weight.T + model.head.bias
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert (logits - seen[0] @ model.embedding.weight.T).abs().max() > 0.1  # both options change the logits


def test_embedding_norm_before_the_first_block() -> None:
    """norm.embedding: the first block reads LayerNorm(sqrt(d) E[ids] + P[pos + offset]) (BART's
    layernorm_embedding; with scale_embeddings as Marian and BART-large-style configs set it)."""
    spec = spec_from_dict(BASE | {"norm": {"kind": "layernorm", "embedding": True}, "scale_embeddings": True})
    model = build_model(spec, seed=3).eval()
    norm = model.decoder.embedding_norm
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    seen = []
    model.decoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    ids = torch.randint(0, 23, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        model(ids)
        table = model.decoder.position.table.weight
        summed = math.sqrt(8) * model.embedding.weight[ids[0]] + table[torch.arange(6) + 2]
        expected = F.layer_norm(summed, (8,), norm.weight, norm.bias, spec.norm.eps)
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=0)


def test_logit_softcap() -> None:
    """logits = cap tanh(head(h) / cap) (Gemma 2's final_logit_softcapping)."""
    spec = spec_from_dict(BASE | {"logit_softcap": 0.5})
    model = build_model(spec, seed=5).eval()
    seen = []
    model.decoder.final_norm.register_forward_hook(lambda m, i, out: seen.append(out))
    ids = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        logits, _ = model(ids)
    raw = seen[0] @ model.embedding.weight.T
    assert raw.abs().max() > 1.0  # past the cap: the tanh bends them
    torch.testing.assert_close(logits, 0.5 * torch.tanh(raw / 0.5), atol=1e-5, rtol=0)


def test_sandwich_norms() -> None:
    """placement sandwich: x + post(f(pre(x))) for each sublayer, with norms of its own (Gemma 2), against
    the block's sublayers composed here."""
    spec = spec_from_dict(BASE | {"norm": {"kind": "rmsnorm", "placement": "sandwich", "offset": 1.0}})
    model = build_model(spec, seed=7).eval()
    block = model.decoder.blocks[0]
    norms = [block.attention_norm, block.attention_post_norm, block.ffn_norm, block.ffn_post_norm]
    assert len({id(n) for n in norms}) == 4
    with torch.no_grad():
        for norm in norms:
            norm.weight.normal_(0.0, 0.5)
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(8))

    def rms(norm: torch.nn.Module, v: torch.Tensor) -> torch.Tensor:
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + spec.norm.eps) * (1.0 + norm.weight)

    with torch.no_grad():
        got, _, _ = block(x, None, True, None, None)
        attended, _ = block.attention(rms(norms[0], x), None, True)
        h = x + rms(norms[1], attended)
        expected = h + rms(norms[3], block.ffn(rms(norms[2], h)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_pattern_cycle_gives_each_layer_its_own() -> None:
    """pattern [local 2, full]: layers 0 and 2 see keys at distance < 2, layer 1 all earlier keys (Gemma 2's
    alternating layers); read from the masks the blocks receive."""
    cycle = [{"kind": "local", "window": 2}, {"kind": "full"}]
    spec = spec_from_dict(BASE | {"n_layers": 3, "attention": {"n_heads": 2, "pattern": cycle}})
    model = build_model(spec, seed=9).eval()
    masks = []
    for block in model.decoder.blocks:
        block.register_forward_pre_hook(lambda m, args: masks.append(args[1]))
    with torch.no_grad():
        model(torch.randint(0, 23, (1, 6), generator=torch.Generator().manual_seed(10)))
    visible = [(mask[0, 0] == 0).int().tolist() for mask in masks]  # (T, S) per layer
    local = [[int(0 <= t - s < 2) for s in range(6)] for t in range(6)]
    full = [[int(s <= t) for s in range(6)] for t in range(6)]
    assert visible == [local, full, local]
