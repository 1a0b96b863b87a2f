"""Every variant of every family exports, and ONNX Runtime matches PyTorch on it.

The models form a pairwise covering set: every pair of choices from two families (say rope
with geglu, or sparse attention with post-norm) appears in at least one exported model. The
full product would be 1,080 exports; the covering set is about 30, chosen greedily below.
Parity is `check_parity`: left-padded batch, prefill, then 8 cached steps, against the fp32
PyTorch forward of the model as built (the portable graph is exported from a packed copy).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import onnx
import pytest

from nima.builders import build_model
from nima.export.decoder.contract import input_names, output_names
from nima.export.decoder.graph import export_decoder
from nima.export.decoder.parity import check_parity
from nima.export.parity import session_for
from nima.export.targets.ort.export import fuse_for_ort
from nima.export.targets.portable import export_portable
from nima.layout import LOGITS_TO_KEEP
from nima.spec import ModelSpec, spec_from_dict
from nima.spec.variants import (
    AttentionPattern,
    FfnSpec,
    Llama3Frequencies,
    NormPlacement,
    NormSpec,
    PositionSpec,
    variant_examples,
    variant_kinds,
)

# every variant the spec has, read from the spec: a new kind joins the cover by being added there
FAMILIES: dict[str, list[object]] = {
    "pattern": list(variant_examples(AttentionPattern)),
    "kv_heads": [4, 2, 1],
    "ffn": list(variant_kinds(FfnSpec)),
    "position": list(variant_kinds(PositionSpec)),
    "norm": list(variant_kinds(NormSpec)),
    "placement": list(variant_kinds(NormPlacement)),
}


def pairwise_cover() -> list[tuple[int, ...]]:
    """Greedy covering array: index tuples (one per family) covering every cross-family pair."""
    sizes = [len(v) for v in FAMILIES.values()]
    families = range(len(sizes))
    uncovered = {
        (f, a, g, b) for f, g in itertools.combinations(families, 2) for a in range(sizes[f]) for b in range(sizes[g])
    }
    candidates = list(itertools.product(*(range(n) for n in sizes)))
    pairs = list(itertools.combinations(families, 2))
    chosen: list[tuple[int, ...]] = []
    while uncovered:
        best = max(candidates, key=lambda c, todo=uncovered: sum((f, c[f], g, c[g]) in todo for f, g in pairs))
        chosen.append(best)
        uncovered = uncovered - {(f, best[f], g, best[g]) for f, g in pairs}
    return chosen


COVER = pairwise_cover()


def spec_for(index: int) -> ModelSpec:
    """The cover's model ``index``. The on/off options ride along on the cover's models by index, so
    each appears in several exports without adding any: bias, tied embeddings, qk-norm, an explicit
    head dim (not d_model / n_heads), embedding scaling, rope scaling, no final norm, GELU's tanh form,
    q/k/v biases apart from the others, an RMSNorm gain offset, Llama 3.1's RoPE frequency scaling, an
    attention scale, an output scale and bias, a norm of the embeddings, the split sinusoid layout, a
    learned table's offset, attention and logit soft-caps, and a cycle of attention patterns."""
    choice = {name: values[i] for (name, values), i in zip(FAMILIES.items(), COVER[index], strict=True)}
    attention = {"n_heads": 4, "n_kv_heads": choice["kv_heads"], "pattern": choice["pattern"]}
    attention |= {"qk_norm": index % 4 == 1} | ({"head_dim": 6} if index % 5 == 2 else {})
    attention |= {"qkv_bias": index % 3 == 0} if index % 7 == 3 else {}  # the opposite of the other biases
    attention |= {"scale": 0.8} if index % 3 == 1 else {}
    attention |= {"softcap": 1.5} if index % 4 == 2 else {}
    if index % 6 == 5:  # a cycle of patterns: this one, then full attention
        attention["pattern"] = [choice["pattern"], {"kind": "full"}]
    scaled = choice["position"] == "rope" and index % 2 == 1
    tanh = choice["ffn"] in ("gelu", "geglu") and index % 2 == 0
    position = {"kind": choice["position"]} | ({"scaling_factor": 2.0} if scaled else {})
    if choice["position"] == "rope" and index % 4 in (0, 1):
        position["frequency_scaling"] = {"kind": "llama3", **Llama3Frequencies.example}
    if choice["position"] == "sinusoidal" and index % 2 == 0:
        position["layout"] = "split"
    if choice["position"] == "learned" and index % 2 == 1:
        position["offset"] = 2
    return spec_from_dict(
        {
            "vocab_size": 37,
            "max_seq_len": 32,
            "d_model": 16,
            "n_layers": 1 + index % 2,
            "attention": attention,
            "ffn": {"kind": choice["ffn"], "hidden": 24} | ({"approximate": "tanh"} if tanh else {}),
            "position": position,
            "norm": {
                "kind": choice["norm"],
                "placement": choice["placement"],
                "final": index % 5 != 4,
                "embedding": index % 4 == 2,
            }
            | ({"offset": 1.0} if choice["norm"] == "rmsnorm" and index % 2 == 0 else {}),
            "bias": index % 3 != 0,
            "tie_embeddings": index % 2 == 0,
            "scale_embeddings": index % 4 == 3,
            "output_scale": 0.5 if index % 3 == 2 else 1.0,
            "output_bias": index % 4 == 1,
            "logit_softcap": 4.0 if index % 5 == 1 else None,
            "init": {"kind": "normal", "std": 0.2, "scaled_residual": False},
        }
    )


def test_every_option_rides_in_the_cover() -> None:
    """Each on/off option of `spec_for` is on in some exported model and off in another."""
    specs = [spec_for(i) for i in range(len(COVER))]
    options = {
        "qk_norm": [s.attention.qk_norm for s in specs],
        "explicit head_dim": [s.attention.head_dim is not None for s in specs],
        "scale_embeddings": [s.scale_embeddings for s in specs],
        "rope scaling": [getattr(s.position, "scaling_factor", 1.0) != 1.0 for s in specs],
        "no final norm": [not s.norm.final for s in specs],
        "tanh GELU": [getattr(s.ffn, "approximate", "none") == "tanh" for s in specs],
        "q/k/v biases apart": [s.attention.qkv_bias not in (None, s.bias) for s in specs],
        "RMSNorm gain offset": [getattr(s.norm, "offset", 0.0) == 1.0 for s in specs],
        "llama3 frequencies": [getattr(s.position, "frequency_scaling", None) is not None for s in specs],
        "attention scale": [s.attention.scale is not None for s in specs],
        "output scale": [s.output_scale != 1.0 for s in specs],
        "output bias": [s.output_bias for s in specs],
        "embedding norm": [s.norm.embedding for s in specs],
        "split sinusoids": [getattr(s.position, "layout", "") == "split" for s in specs],
        "learned offset": [getattr(s.position, "offset", 0) == 2 for s in specs],
        "attention soft-cap": [s.attention.softcap is not None for s in specs],
        "logit soft-cap": [s.logit_softcap is not None for s in specs],
        "pattern cycle": [len(s.attention.patterns) > 1 for s in specs],
    }
    for name, values in options.items():
        assert any(values) and not all(values), name


def test_cover_is_pairwise_complete() -> None:
    """Independent brute-force check of the covering property."""
    names = list(FAMILIES)
    for f, g in itertools.combinations(range(len(names)), 2):
        seen = {(c[f], c[g]) for c in COVER}
        assert len(seen) == len(FAMILIES[names[f]]) * len(FAMILIES[names[g]]), (names[f], names[g])
    assert len(COVER) < 40


@pytest.mark.parametrize("index", range(len(COVER)))
def test_export_parity(index: int, tmp_path: Path) -> None:
    spec = spec_for(index)
    model = build_model(spec, seed=index).eval()
    path = export_portable(model, spec, tmp_path / "model.onnx")  # packed projections (and grouped queries)
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == [*input_names(spec.n_layers), LOGITS_TO_KEEP]  # the last: optional
    assert [o.name for o in graph.graph.output] == output_names(spec.n_layers)
    report = check_parity(model, spec, session_for(path, threads=1), batch=3, decode_steps=8, seed=index)
    assert report.max_abs_diff <= 1e-4, report
    assert report.prompt_lengths[0] > report.prompt_lengths[-1]  # the batch really is padded
    assert report.next_token_agreement == 1.0
    if index % 3 == 0:  # the ORT-fused target on a third of the cover: fusion must not change results
        fused = tmp_path / "fused.onnx"
        # the rules rewrite the model's own (unpacked) graph, as `export_for_ort` does without GQA
        fuse_for_ort(export_decoder(model, spec, tmp_path / "unpacked.onnx"), fused)
        fused_report = check_parity(model, spec, session_for(fused, threads=1), batch=3, decode_steps=8, seed=index)
        assert fused_report.max_abs_diff <= 1e-4, fused_report
