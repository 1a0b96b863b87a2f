"""Encoder-decoder export: encoder.onnx + decoder.onnx against PyTorch for the original transformer,
a T5-style model and a RoPE + GQA model; cached decoding equal to the full forward; cross-attention
keys/values computed by the encoder graph only; greedy decoding on the graphs equal to PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from nima.builders import EncoderDecoderLM, build_model
from nima.export.decoder.contract import PAST_KEY, PAST_VALUE
from nima.export.parity import session_for
from nima.export.seq2seq.contract import (
    ENCODER_HIDDEN,
    cross_names,
    decoder_input_names,
    decoder_output_names,
    encoder_input_names,
    encoder_output_names,
)
from nima.export.seq2seq.graph import export_encoder_decoder
from nima.export.seq2seq.parity import check_seq2seq_parity
from nima.spec import ModelSpec, spec_from_dict
from nima.train.greedy import greedy_decode

BASE = {"architecture": "encoder-decoder", "vocab_size": 41, "max_seq_len": 32, "d_model": 32, "n_layers": 2}
FAMILIES = {
    # Vaswani et al.: sinusoidal positions, post-norm, ReLU FFN, biases, tied and scaled embeddings
    "original": {
        "n_encoder_layers": 2,
        "attention": {"n_heads": 4},
        "ffn": {"kind": "relu", "hidden": 64},
        "position": {"kind": "sinusoidal"},
        "norm": {"kind": "layernorm", "placement": "post"},
        "bias": True,
        "tie_embeddings": True,
        "scale_embeddings": True,
        "init": {"kind": "xavier"},
    },
    # T5: relative position bias, pre-RMSNorm, gated FFN, no biases, untied head
    "t5": {
        "n_encoder_layers": 3,
        "attention": {"n_heads": 4, "head_dim": 8},
        "ffn": {"kind": "geglu", "hidden": 48},
        "position": {"kind": "relative", "num_buckets": 8, "max_distance": 16},
        "norm": {"kind": "rmsnorm", "placement": "pre"},
        "bias": False,
        "tie_embeddings": False,
        "init": {"kind": "normal", "std": 0.3},
    },
    # RoPE with grouped-query attention (2 kv heads for 4 query heads)
    "rope-gqa": {
        "n_encoder_layers": 1,
        "attention": {"n_heads": 4, "n_kv_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 48},
        "position": {"kind": "rope"},
        "norm": {"kind": "rmsnorm", "placement": "pre"},
        "bias": False,
        "tie_embeddings": False,
        "init": {"kind": "normal", "std": 0.3},
    },
}
START, END = 1, 2


class Exported:
    """A model, its spec, and ORT sessions on its two graphs."""

    def __init__(self, family: str, folder: Path) -> None:
        self.spec: ModelSpec = spec_from_dict({**BASE, "name": family, **FAMILIES[family]})
        model = build_model(self.spec, seed=7)
        assert isinstance(model, EncoderDecoderLM)
        self.model = model.eval()
        self.encoder_path, self.decoder_path = export_encoder_decoder(self.model, self.spec, folder)
        self.encoder = session_for(self.encoder_path, threads=1)
        self.decoder = session_for(self.decoder_path, threads=1)


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return Exported(request.param, tmp_path_factory.mktemp(request.param))


def _sources(seed: int, batch: int = 3, length: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(3, BASE["vocab_size"], (batch, length), dtype=np.int64)
    mask = np.ones_like(src)
    for row in range(1, batch):
        mask[row, length - 2 * row :] = 0  # right padding
    return src, mask


def _empty_past(x: Exported, batch: int) -> dict[str, np.ndarray]:
    shape = (batch, x.spec.n_kv_heads, 0, x.spec.head_dim)
    return {name % i: np.zeros(shape, np.float32) for i in range(x.spec.n_layers) for name in (PAST_KEY, PAST_VALUE)}


def _decoder_feed(ids: np.ndarray, mask: np.ndarray, src_mask: np.ndarray, start: int) -> dict[str, np.ndarray]:
    positions = np.broadcast_to(np.arange(start, start + ids.shape[1]), ids.shape).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "encoder_attention_mask": src_mask}


def test_graph_names_follow_the_contract(exported: Exported) -> None:
    n = exported.spec.n_layers
    assert [i.name for i in exported.encoder.get_inputs()] == encoder_input_names()
    assert [o.name for o in exported.encoder.get_outputs()] == encoder_output_names(n)
    assert [i.name for i in exported.decoder.get_inputs()] == decoder_input_names(n)
    assert [o.name for o in exported.decoder.get_outputs()] == decoder_output_names(n)


def test_parity_with_pytorch(exported: Exported) -> None:
    report = check_seq2seq_parity(exported.model, exported.spec, exported.encoder, exported.decoder, seed=3)
    assert report.passed, report.describe()
    assert report.encoder_max_abs_diff <= 1e-4 and report.max_abs_diff <= 1e-4
    assert report.decode_steps == 8 and len(set(report.prompt_lengths)) == 3 and len(set(report.source_lengths)) == 3
    assert report.next_token_agreement == 1.0


def test_a_wrong_graph_fails_the_parity_check(exported: Exported) -> None:
    other = build_model(exported.spec, seed=8).eval()  # other weights, same shapes
    report = check_seq2seq_parity(other, exported.spec, exported.encoder, exported.decoder)
    assert not report.passed


def test_cached_decoding_equals_the_full_forward(exported: Exported) -> None:
    src, src_mask = _sources(seed=1)
    enc = exported.encoder.run(None, {"input_ids": src, "attention_mask": src_mask})
    cross = dict(zip(cross_names(exported.spec.n_layers), enc[1:], strict=True))
    tgt = np.random.default_rng(2).integers(3, BASE["vocab_size"], (3, 7), dtype=np.int64)
    with torch.no_grad():
        full, _, _ = exported.model(torch.from_numpy(src), torch.from_numpy(tgt), torch.from_numpy(src_mask))
    full = full.numpy()  # (B, T, V)
    ones = np.ones_like(tgt)
    whole = exported.decoder.run(None, {**_decoder_feed(tgt, ones, src_mask, 0), **_empty_past(exported, 3), **cross})
    assert np.abs(whole[0] - full).max() <= 1e-4
    past = _empty_past(exported, 3)
    for t in range(tgt.shape[1]):  # one token at a time through the cache
        feed = _decoder_feed(tgt[:, t : t + 1], ones[:, : t + 1], src_mask, t)
        out = exported.decoder.run(None, {**feed, **past, **cross})
        assert np.abs(out[0][:, 0] - full[:, t]).max() <= 1e-4, f"step {t}"
        past = dict(zip(past, out[1:], strict=True))


def _weights(path: Path) -> list[np.ndarray]:
    return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]


def _holds(weights: list[np.ndarray], w: np.ndarray) -> bool:
    return any(a.shape in (w.shape, w.T.shape) and (np.array_equal(a, w) or np.array_equal(a, w.T)) for a in weights)


def test_cross_attention_keys_values_come_from_the_encoder_graph_only(exported: Exported) -> None:
    decoder_inputs = [i.name for i in exported.decoder.get_inputs()]
    assert ENCODER_HIDDEN not in decoder_inputs  # nothing for a step to project the encoder output from
    encoder_w, decoder_w = _weights(exported.encoder_path), _weights(exported.decoder_path)
    for block in exported.model.decoder.blocks:
        for proj in (block.cross_attention.k_proj, block.cross_attention.v_proj):
            w = proj.weight.detach().numpy()
            assert _holds(encoder_w, w), "the encoder graph computes the cross keys/values"
            assert not _holds(decoder_w, w), "the decoder graph must not recompute them"
        q = block.cross_attention.q_proj.weight.detach().numpy()
        assert _holds(decoder_w, q)  # the check sees the decoder's own weights, so it can fail
    # and the decoder reads the cross keys/values it is given: other values, other logits
    src, src_mask = _sources(seed=4)
    enc = exported.encoder.run(None, {"input_ids": src, "attention_mask": src_mask})
    cross = dict(zip(cross_names(exported.spec.n_layers), enc[1:], strict=True))
    feed = {**_decoder_feed(np.full((3, 1), START), np.ones((3, 1), np.int64), src_mask, 0), **_empty_past(exported, 3)}
    a = exported.decoder.run(None, {**feed, **cross})[0]
    b = exported.decoder.run(None, {**feed, **{k: v * 0.5 for k, v in cross.items()}})[0]
    assert np.abs(a - b).max() > 1e-3


def ort_greedy(x: Exported, src: np.ndarray, src_mask: np.ndarray, max_new: int) -> np.ndarray:
    """Greedy decoding with ONNX Runtime on the two graphs: encoder once, then one decoder step per token."""
    enc = x.encoder.run(None, {"input_ids": src, "attention_mask": src_mask})
    cross = dict(zip(cross_names(x.spec.n_layers), enc[1:], strict=True))
    batch = src.shape[0]
    past = _empty_past(x, batch)
    step = np.full((batch, 1), START, dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    tokens = []
    for t in range(max_new):
        feed = _decoder_feed(step, np.ones((batch, t + 1), np.int64), src_mask, t)
        out = x.decoder.run(None, {**feed, **past, **cross})
        token = np.where(done, END, out[0][:, -1].argmax(-1))  # (B,)
        tokens.append(token)
        done |= token == END
        if done.all():
            break
        past = dict(zip(past, out[1:], strict=True))
        step = token[:, None].astype(np.int64)
    return np.stack(tokens, axis=1)


def test_greedy_on_the_graphs_equals_pytorch_greedy(exported: Exported) -> None:
    src, src_mask = _sources(seed=5, batch=4)
    want = greedy_decode(exported.model, torch.from_numpy(src), torch.from_numpy(src_mask), START, END, 12).numpy()
    got = ort_greedy(exported, src, src_mask, 12)
    assert got.tolist() == want.tolist()
    assert len(set(map(tuple, got.tolist()))) > 1, "rows should differ, or the comparison says little"
