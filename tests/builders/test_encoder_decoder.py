"""Encoder-decoder models: causal decoder, cached decoding with reused cross keys/values,
backends, and padding on both sides — across position schemes, patterns, kv heads and norms."""

from __future__ import annotations

import itertools

import pytest
import torch

from nima.builders import EncoderDecoderLM, build_model
from nima.spec import spec_from_dict
from nima.spec.variants import AttentionPattern, FfnSpec, NormPlacement, PositionSpec, variant_examples, variant_kinds

# every variant the spec has, read from the spec: a new kind joins the matrix by being added there
POSITIONS = list(variant_kinds(PositionSpec))
PATTERNS = variant_examples(AttentionPattern)
KV_HEADS = [4, 2, 1]
PLACEMENTS = list(variant_kinds(NormPlacement))
FFNS = list(variant_kinds(FfnSpec))
COMBOS = list(itertools.product(POSITIONS, PATTERNS, KV_HEADS, PLACEMENTS))
TOL = 1e-5
VOCAB, S, T = 29, 7, 6


def build(position: str, pattern: dict, kv: int, placement: str, index: int) -> EncoderDecoderLM:
    spec = spec_from_dict(
        {
            "architecture": "encoder-decoder",
            "vocab_size": VOCAB,
            "max_seq_len": 16,
            "d_model": 16,
            "n_layers": 2,
            "n_encoder_layers": 1 + index % 2,
            "attention": {"n_heads": 4, "n_kv_heads": kv, "pattern": pattern, "qk_norm": index % 3 == 0},
            "ffn": {"kind": FFNS[index % len(FFNS)], "hidden": 24},
            "position": {"kind": position},
            "norm": {"kind": "rmsnorm" if index % 2 else "layernorm", "placement": placement},
            "bias": index % 2 == 0,
            "tie_embeddings": index % 4 < 2,
            "init": {"kind": "normal", "std": 0.2, "scaled_residual": False},
        }
    )
    model = build_model(spec, seed=index).eval()
    assert isinstance(model, EncoderDecoderLM)
    return model


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = backend


@pytest.mark.parametrize("index", range(len(COMBOS)), ids=[f"{pos}-{p['kind']}-kv{k}-{pl}" for pos, p, k, pl in COMBOS])
@torch.no_grad()
def test_encoder_decoder_combination(index: int) -> None:
    model = build(*COMBOS[index], index)
    gen = torch.Generator().manual_seed(index)
    src = torch.randint(1, VOCAB, (2, S), generator=gen)
    tgt = torch.randint(1, VOCAB, (2, T), generator=gen)
    src_mask = torch.ones_like(src)
    src_mask[1, -2:] = 0  # row 1's source is 2 tokens shorter (right padding)
    full, _, _ = model(src, tgt, attention_mask=src_mask)  # (2, T, V)

    # source padding: row 1 equals its unpadded source alone
    alone, _, _ = model(src[1:, :-2], tgt[1:])
    assert (full[1] - alone[0]).abs().max() <= TOL

    # causal decoder: changing later target tokens leaves earlier logits alone
    changed = tgt.clone()
    changed[:, 3:] = (tgt[:, 3:] + 1) % VOCAB
    later, _, _ = model(src, changed, attention_mask=src_mask)
    assert (later[:, :3] - full[:, :3]).abs().max() <= TOL
    assert (later[:, 3:] - full[:, 3:]).abs().max() > 1e-3, "later logits should see the change"

    # cached decoding: encoder once, cross keys/values computed on the first step and reused
    memory = model.encode(src, src_mask)
    tgt_mask = torch.ones_like(tgt)
    logits, past, cross = model.decode(tgt[:, :2], memory, src_mask, tgt_mask[:, :2])
    steps = [logits]
    for t in range(2, T):
        # no encoder output passed: the cached cross keys/values must be enough
        logits, past, cross_again = model.decode(
            tgt[:, t : t + 1], None, src_mask, tgt_mask[:, : t + 1], past_key_values=past, cross_key_values=cross
        )
        assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(cross, cross_again, strict=True))
        steps.append(logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= TOL

    # target left padding: row 0's target shortened and left-padded equals it alone
    pad = 2
    padded_tgt = torch.cat([torch.zeros(1, pad, dtype=torch.long), tgt[:1, : T - pad]], dim=1)
    padded_mask = torch.ones_like(padded_tgt)
    padded_mask[0, :pad] = 0
    padded, _, _ = model.decode(padded_tgt, memory[:1], src_mask[:1], padded_mask)
    short, _, _ = model.decode(tgt[:1, : T - pad], memory[:1], src_mask[:1])
    assert (padded[0, pad:] - short[0]).abs().max() <= TOL

    # eager equals sdpa
    set_backend(model, "eager")
    eager, _, _ = model(src, tgt, attention_mask=src_mask)
    assert (eager - full).abs().max() <= TOL


def test_encoder_is_bidirectional() -> None:
    """Unlike the decoder, every encoder position sees the whole source."""
    model = build("rope", {"kind": "full"}, 4, "pre", 1)
    src = torch.randint(1, VOCAB, (1, S))
    changed = src.clone()
    changed[0, -1] = (src[0, -1] % (VOCAB - 1)) + 1
    with torch.no_grad():
        a, b = model.encode(src), model.encode(changed)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4


def test_logits_mask_gives_the_full_logits_at_those_positions_and_the_same_loss() -> None:
    """Training's head-only-where-labels-count path against the full forward and a plain loss."""
    from nima.train.objective import seq2seq_loss

    model = build("sinusoidal", {"kind": "full"}, 2, "pre", 1)
    gen = torch.Generator().manual_seed(3)
    src = torch.randint(1, VOCAB, (3, S), generator=gen)
    tgt = torch.randint(1, VOCAB, (3, T), generator=gen)
    src_mask = torch.tensor([[1] * S, [1] * (S - 2) + [0] * 2, [1] * 3 + [0] * (S - 3)])
    tgt_mask = torch.tensor([[1] * T, [1] * (T - 1) + [0], [1] * 2 + [0] * (T - 2)])
    real = tgt_mask.bool()
    with torch.no_grad():
        full, _, _ = model(src, tgt, src_mask, tgt_mask)  # (B, T, V)
        picked, _, _ = model(src, tgt, src_mask, tgt_mask, real)  # (N, V)
    assert picked.shape == (int(real.sum()), VOCAB)
    torch.testing.assert_close(picked, full[real], rtol=0, atol=1e-6)

    labels = torch.randint(0, VOCAB, (3, T), generator=gen).masked_fill(~real, -100)
    batch = {
        "input_ids": src,
        "attention_mask": src_mask,
        "decoder_input_ids": tgt,
        "decoder_attention_mask": tgt_mask,
        "labels": labels,
    }
    with torch.no_grad():
        loss, count = seq2seq_loss(model, batch)
    plain = -torch.log_softmax(full, -1)[real].gather(-1, labels[real][:, None]).sum()
    assert count == int(real.sum())
    torch.testing.assert_close(loss, plain, rtol=1e-6, atol=1e-5)
