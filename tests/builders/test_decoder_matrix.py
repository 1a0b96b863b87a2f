"""Every combination of attention pattern x kv heads x FFN x position x norm kind x placement.

For each, on a tiny decoder (fp32), checks against the model's own full forward — the
independent reference for these properties:
- causality: logits at t do not change when later tokens change;
- cache: prefill + token-by-token decoding with the KV cache equals the full forward;
- backends: ``sdpa`` equals ``eager``;
- padding: left padding in a batch does not change the logits of real tokens.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from nima.builders import build_model
from nima.spec import ModelSpec, spec_from_dict
from nima.spec.variants import (
    AttentionPattern,
    FfnSpec,
    NormPlacement,
    NormSpec,
    PositionSpec,
    variant_examples,
    variant_kinds,
)

# every variant the spec has, read from the spec: a new kind joins the matrix by being added there
PATTERNS = variant_examples(AttentionPattern)
KV_HEADS = [4, 2, 1]
FFNS = list(variant_kinds(FfnSpec))
POSITIONS = list(variant_kinds(PositionSpec))
NORMS = list(variant_kinds(NormSpec))
PLACEMENTS = list(variant_kinds(NormPlacement))
COMBOS = list(itertools.product(PATTERNS, KV_HEADS, FFNS, POSITIONS, NORMS, PLACEMENTS))
TOL = 2e-5  # float32 rounding: sandwich norms scale each sublayer's small output up to unit size
VOCAB, T = 37, 9


def tiny_spec(pattern: dict, kv: int, ffn: str, position: str, norm: str, placement: str, index: int) -> ModelSpec:
    """A 2-layer, d_model 16 decoder; qk-norm, bias and tying alternate so each is covered."""
    return spec_from_dict(
        {
            "vocab_size": VOCAB,
            "max_seq_len": 16,
            "d_model": 16,
            "n_layers": 2,
            "attention": {"n_heads": 4, "n_kv_heads": kv, "pattern": pattern, "qk_norm": index % 2 == 0},
            "ffn": {"kind": ffn, "hidden": 24},
            "position": {"kind": position},
            "norm": {"kind": norm, "placement": placement},
            "bias": index % 3 != 0,
            "tie_embeddings": index % 4 < 2,
            # a wide init makes logits depend strongly on every input, so the checks have teeth
            "init": {"kind": "normal", "std": 0.2, "scaled_residual": False},
        }
    )


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = backend


def decode_with_cache(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, prefill: int) -> torch.Tensor:
    """Prefill ``prefill`` tokens, then feed the rest one at a time through the cache."""
    logits, past = model(ids[:, :prefill], attention_mask=mask[:, :prefill])
    steps = [logits]
    for t in range(prefill, ids.shape[1]):
        logits, past = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], past_key_values=past)
        steps.append(logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize(
    "index", range(len(COMBOS)), ids=[f"{p['kind']}-kv{k}-{f}-{pos}-{n}-{pl}" for p, k, f, pos, n, pl in COMBOS]
)
@torch.no_grad()
def test_decoder_combination(index: int) -> None:
    spec = tiny_spec(*COMBOS[index], index)
    model = build_model(spec, seed=index).eval()
    gen = torch.Generator().manual_seed(index)
    ids = torch.randint(0, VOCAB, (2, T), generator=gen)
    full, _ = model(ids)  # (2, T, V), no mask: the fast path

    # causality: change everything after position t
    t = 4
    changed = ids.clone()
    changed[:, t + 1 :] = (ids[:, t + 1 :] + 1 + torch.randint(0, VOCAB - 1, (2, T - t - 1), generator=gen)) % VOCAB
    later, _ = model(changed)
    assert (later[:, : t + 1] - full[:, : t + 1]).abs().max() <= TOL
    assert (later[:, t + 1 :] - full[:, t + 1 :]).abs().max() > 1e-3, "later logits should see the change"

    # an explicit all-ones mask takes the masked path and must agree with the fast path
    ones = torch.ones_like(ids)
    masked, _ = model(ids, attention_mask=ones)
    assert (masked - full).abs().max() <= TOL

    # cache: prefill 3 tokens, then one by one
    cached = decode_with_cache(model, ids, ones, prefill=3)
    assert (cached - full).abs().max() <= TOL

    # padding: row 0 left-padded by 3 inside a batch equals row 0 alone
    pad = 3
    short = ids[0, : T - pad]
    padded_ids = torch.cat([torch.zeros(pad, dtype=torch.long), short])[None]
    batch_ids = torch.cat([padded_ids, ids[1:2]])
    batch_mask = torch.ones_like(batch_ids)
    batch_mask[0, :pad] = 0
    batch, _ = model(batch_ids, attention_mask=batch_mask)
    alone, _ = model(short[None])
    assert (batch[0, pad:] - alone[0]).abs().max() <= TOL
    assert (batch[1] - full[1]).abs().max() <= TOL
    batch_cached = decode_with_cache(model, batch_ids, batch_mask, prefill=4)
    assert (batch_cached[:, pad:] - batch[:, pad:]).abs().max() <= TOL

    # backends: eager equals sdpa on the fast path, the masked path and the cached path
    set_backend(model, "eager")
    eager, _ = model(ids)
    eager_batch, _ = model(batch_ids, attention_mask=batch_mask)
    eager_cached = decode_with_cache(model, ids, ones, prefill=3)
    assert (eager - full).abs().max() <= TOL
    assert (eager_batch[:, pad:] - batch[:, pad:]).abs().max() <= TOL
    assert (eager_cached - full).abs().max() <= TOL


def test_matrix_covers_every_kind() -> None:
    """The matrix's models use every kind the spec allows, so a new variant cannot skip these checks."""
    patterns, _, ffns, positions, norms, placements = zip(*COMBOS, strict=True)
    assert {p["kind"] for p in patterns} == set(variant_kinds(AttentionPattern))
    assert set(ffns) == set(variant_kinds(FfnSpec))
    assert set(positions) == set(variant_kinds(PositionSpec))
    assert set(norms) == set(variant_kinds(NormSpec))
    assert set(placements) == set(variant_kinds(NormPlacement))
