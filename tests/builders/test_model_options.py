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
