"""Norms, feed-forward networks and attention against their textbook formulas.

Every expected value is computed here in float64 from the module's own weights, with the
formula written out (explicit loops over heads, queries and keys; a hand-written softmax), and
never by calling the module or torch's functional versions of the same layer.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from nima.builders.attention import CrossAttention, SelfAttention
from nima.builders.ffn import FFNS
from nima.builders.norms import NORMS
from nima.builders.positions import RotaryPositions
from nima.builders.sizes import Sizes

Vector = np.ndarray  # float64, 1-D


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def randomise(module: nn.Module, seed: int) -> None:
    """Give every parameter (norm gains and biases included) random, non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p.ndim == 1 else 0.0))


# --- norms ----------------------------------------------------------------------------------


def layer_norm_ref(x: Vector, gain: Vector, bias: Vector | None, eps: float) -> Vector:
    """(x - mean) / sqrt(var + eps) * g + b, with the biased variance (Ba et al. 2016)."""
    n = len(x)
    mean = sum(x) / n
    var = sum((v - mean) ** 2 for v in x) / n
    out = np.array([(v - mean) / math.sqrt(var + eps) * g for v, g in zip(x, gain, strict=True)])
    return out + bias if bias is not None else out


def rms_norm_ref(x: Vector, gain: Vector, eps: float) -> Vector:
    """x / sqrt(mean(x^2) + eps) * g (Zhang & Sennrich 2019)."""
    rms = math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return np.array([v / rms * g for v, g in zip(x, gain, strict=True)])


def norm_ref(module: nn.Module, kind: str, eps: float) -> Callable[[Vector], Vector]:
    """The textbook formula of ``kind`` bound to ``module``'s parameters."""
    gain = as_np(module.weight)
    if kind == "layernorm":
        bias = as_np(module.bias) if module.bias is not None else None
        return lambda x: layer_norm_ref(x, gain, bias, eps)
    return lambda x: rms_norm_ref(x, gain, eps)


def test_norm_table_is_covered() -> None:
    """Every norm kind has a reference formula here."""
    assert set(NORMS) == {"layernorm", "rmsnorm"}


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_norm_matches_formula(kind: str, bias: bool, eps: float) -> None:
    """LayerNorm / RMSNorm over the last dim; a large eps checks eps sits inside the sqrt."""
    width = 12
    module = NORMS[kind](Sizes(d_model=width, bias=bias), eps=eps)(width)
    randomise(module, seed=10)
    if kind == "layernorm":
        assert (module.bias is not None) == bias
    else:
        assert [name for name, _ in module.named_parameters()] == ["weight"]  # RMSNorm has no bias
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, width, generator=gen) * 3.0 + 1.5  # non-zero mean, non-unit scale
    got = as_np(module(x))
    ref = norm_ref(module, kind, eps)
    expected = np.array([[ref(as_np(x[b, t])) for t in range(3)] for b in range(2)])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_rmsnorm_gain_offset() -> None:
    """``offset``: the gain is offset + weight (Gemma's 1 + w), and it starts at 1 (the weight at 1 - offset)."""
    width = 12
    x = torch.randn(2, 3, width, generator=torch.Generator().manual_seed(12)) * 2.0
    fresh = NORMS["rmsnorm"](Sizes(d_model=width), eps=1e-6, offset=1.0)(width)
    assert torch.equal(fresh.weight, torch.zeros(width))
    plain = NORMS["rmsnorm"](Sizes(d_model=width), eps=1e-6)(width)
    assert torch.allclose(fresh(x), plain(x), atol=1e-6)  # both start as gain 1
    randomise(fresh, seed=13)
    got = as_np(fresh(x))
    gain = 1.0 + as_np(fresh.weight)
    expected = np.array([[rms_norm_ref(as_np(x[b, t]), gain, 1e-6) for t in range(3)] for b in range(2)])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_rmsnorm_half_precision_does_not_overflow() -> None:
    """RMSNorm statistics in fp32: fp16 inputs whose squares exceed 65504 still normalise."""
    module = NORMS["rmsnorm"](Sizes(d_model=8), eps=1e-6)(8)
    x = torch.tensor([[300.0, -400.0, 500.0, 250.0, -300.0, 350.0, 450.0, -275.0]])
    got = module.half()(x.half())
    assert got.dtype == torch.float16
    expected = rms_norm_ref(as_np(x[0]), np.ones(8), 1e-6)
    np.testing.assert_allclose(as_np(got[0]), expected, atol=2e-3, rtol=0)


# --- feed-forward ---------------------------------------------------------------------------


def relu(z: float) -> float:
    return max(z, 0.0)


def gelu(z: float) -> float:
    """Exact GELU: 0.5 z (1 + erf(z / sqrt 2))."""
    return 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))


def gelu_tanh(z: float) -> float:
    """GELU's tanh approximation (Hendrycks & Gimpel 2016): 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))."""
    return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def silu(z: float) -> float:
    return z * sigmoid(z)


# case -> (kind, the variant's fields besides hidden, activation, gated)
FFN_FORMULAS: dict[str, tuple[str, dict[str, str], Callable[[float], float], bool]] = {
    "relu": ("relu", {}, relu, False),
    "gelu": ("gelu", {"approximate": "none"}, gelu, False),
    "gelu-tanh": ("gelu", {"approximate": "tanh"}, gelu_tanh, False),
    "silu": ("silu", {}, silu, False),
    "glu": ("glu", {}, sigmoid, True),
    "swiglu": ("swiglu", {}, silu, True),
    "geglu": ("geglu", {"approximate": "none"}, gelu, True),
    "geglu-tanh": ("geglu", {"approximate": "tanh"}, gelu_tanh, True),
}


def affine(layer: nn.Linear, x: Vector) -> Vector:
    """W x + b, one output at a time."""
    w = as_np(layer.weight)
    b = as_np(layer.bias) if layer.bias is not None else np.zeros(w.shape[0])
    return np.array([sum(w[o, i] * x[i] for i in range(len(x))) + b[o] for o in range(w.shape[0])])


def test_ffn_table_is_covered() -> None:
    """Every FFN kind has a reference formula here."""
    assert set(FFNS) == {kind for kind, _, _, _ in FFN_FORMULAS.values()}


@pytest.mark.parametrize("case", list(FFN_FORMULAS))
@pytest.mark.parametrize("bias", [True, False])
def test_ffn_matches_formula(case: str, bias: bool) -> None:
    """Plain: W2 act(W1 x + b1) + b2. Gated: down(act(gate(x)) * up(x))."""
    d_model, hidden = 6, 10
    kind, fields, act, gated = FFN_FORMULAS[case]
    module = FFNS[kind](Sizes(d_model=d_model, bias=bias), hidden=hidden, **fields)
    randomise(module, seed=20)
    assert hasattr(module, "gate") == gated
    assert (module.down.bias is not None) == bias
    x = torch.randn(2, 3, d_model, generator=torch.Generator().manual_seed(21))
    got = as_np(module(x))
    for b in range(2):
        for t in range(3):
            xv = as_np(x[b, t])
            if gated:
                inner = [act(g) * u for g, u in zip(affine(module.gate, xv), affine(module.up, xv), strict=True)]
            else:
                inner = [act(u) for u in affine(module.up, xv)]
            np.testing.assert_allclose(got[b, t], affine(module.down, np.array(inner)), atol=1e-5, rtol=0)


# --- attention ------------------------------------------------------------------------------


def rotate(v: Vector, pos: int, theta: float) -> Vector:
    """RoPE, rotate-half layout: z_i = v[i] + 1j v[i + hd/2] times exp(1j pos theta^(-2i/hd))."""
    hd = len(v)
    half = hd // 2
    out = np.empty(hd)
    for i in range(half):
        z = complex(v[i], v[i + half]) * cmath.exp(1j * pos * theta ** (-2 * i / hd))
        out[i], out[i + half] = z.real, z.imag
    return out


def attention_ref(
    module: SelfAttention | CrossAttention,
    x: torch.Tensor,  # (B, T, d) queries' input
    memory: torch.Tensor,  # (B, S, d) keys' / values' input
    allowed: Callable[[int, int, int], bool],  # (batch, query t, key s) -> visible
    qk_norm: Callable[[nn.Module], Callable[[Vector], Vector]] | None = None,
    rope_theta: float | None = None,
    q_offset: int = 0,  # position of query 0 (keys start at 0)
    scale: float | None = None,  # what q.k is multiplied by; None: 1/sqrt(hd)
    softcap: float | None = None,  # scores -> softcap tanh(scores / softcap)
) -> np.ndarray:
    """Multi-head attention with explicit loops: query head h reads kv head h // (H / H_kv)."""
    n_heads, n_kv, hd = module.n_heads, module.n_kv_heads, module.head_dim
    group = n_heads // n_kv
    b_n, t_n, _ = x.shape
    s_n = memory.shape[1]
    q_norm = qk_norm(module.q_norm) if qk_norm else None
    k_norm = qk_norm(module.k_norm) if qk_norm else None
    out = np.empty((b_n, t_n, module.o_proj.out_features))
    for b in range(b_n):
        qs = [affine(module.q_proj, as_np(x[b, t])) for t in range(t_n)]
        ks = [affine(module.k_proj, as_np(memory[b, s])) for s in range(s_n)]
        vs = [affine(module.v_proj, as_np(memory[b, s])) for s in range(s_n)]
        for t in range(t_n):
            heads = []
            for h in range(n_heads):
                g = h // group
                q = qs[t][h * hd : (h + 1) * hd]
                if q_norm:
                    q = q_norm(q)
                if rope_theta is not None:
                    q = rotate(q, q_offset + t, rope_theta)
                scores, values = [], []
                for s in range(s_n):
                    if not allowed(b, t, s):
                        continue
                    k = ks[s][g * hd : (g + 1) * hd]
                    if k_norm:
                        k = k_norm(k)
                    if rope_theta is not None:
                        k = rotate(k, s, rope_theta)
                    dot = sum(qi * ki for qi, ki in zip(q, k, strict=True))
                    score = dot / math.sqrt(hd) if scale is None else dot * scale
                    scores.append(score if softcap is None else softcap * math.tanh(score / softcap))
                    values.append(vs[s][g * hd : (g + 1) * hd])
                top = max(scores)
                weights = [math.exp(sc - top) for sc in scores]
                total = sum(weights)
                heads.append(sum(w / total * v for w, v in zip(weights, values, strict=True)))
            out[b, t] = affine(module.o_proj, np.concatenate(heads))
    return out


def additive_mask(allowed: Callable[[int, int, int], bool], b_n: int, t_n: int, s_n: int) -> torch.Tensor:
    """(B, 1, T, S): 0 where visible, the fp32 minimum where not."""
    mask = torch.full((b_n, 1, t_n, s_n), torch.finfo(torch.float32).min)
    for b in range(b_n):
        for t in range(t_n):
            for s in range(s_n):
                if allowed(b, t, s):
                    mask[b, 0, t, s] = 0.0
    return mask


def make_attention(
    cls: type,
    n_kv: int,
    backend: str,
    qk_norm: str | None = None,
    bias: bool = True,
    mode: str = "eval",
    scale: float | None = None,
    softcap: float | None = None,
) -> nn.Module:
    """A small attention module with random weights; ``mode`` "train" takes the training path
    (one matrix product over the stacked q/k/v weights; dropout is 0, so nothing else changes)."""
    norm = NORMS[qk_norm](Sizes(d_model=16, bias=True), eps=1e-5) if qk_norm else None
    module = cls(
        d_model=16,
        n_heads=4,
        n_kv_heads=n_kv,
        head_dim=4,
        bias=bias,
        dropout=0.0,
        backend=backend,
        qk_norm=norm,
        scale=scale,
        softcap=softcap,
    )
    randomise(module, seed=30 + n_kv)
    return module.train(mode == "train")


def causal(b: int, t: int, s: int) -> bool:
    return s <= t


BACKENDS = ["sdpa", "eager"]
MODES = ["eval", "train"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_kv", [4, 2, 1])
@pytest.mark.parametrize("use_is_causal", [False, True])
def test_self_attention_matches_reference(backend: str, n_kv: int, use_is_causal: bool, mode: str) -> None:
    """softmax(q k^T / sqrt(hd) + causal) v per head, kv shared in groups (MHA, GQA, MQA)."""
    module = make_attention(SelfAttention, n_kv, backend, mode=mode)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(31))
    with torch.no_grad():
        if use_is_causal:
            got, (k, v) = module(x, None, is_causal=True)
        else:
            got, (k, v) = module(x, additive_mask(causal, 2, 5, 5))
    assert k.shape == v.shape == (2, n_kv, 5, 4)  # the cache holds un-repeated kv heads
    np.testing.assert_allclose(as_np(got), attention_ref(module, x, x, causal), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_attention_scale(backend: str, scale: float, mode: str) -> None:
    """``attention.scale`` replaces 1/sqrt(hd): softmax(scale q k^T + mask) v (T5: 1), self- and cross-attention."""
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(35))
    module = make_attention(SelfAttention, 2, backend, mode=mode, scale=scale)
    with torch.no_grad():
        got, _ = module(x, None, is_causal=True)
        wrong = attention_ref(module, x, x, causal)  # the default scale gives other outputs: the test can fail
        assert np.abs(as_np(got) - wrong).max() > 1e-3
    # scale 1 sharpens the softmax: float32 rounding of the largest outputs as well
    np.testing.assert_allclose(as_np(got), attention_ref(module, x, x, causal, scale=scale), atol=1e-5, rtol=1e-5)
    cross = make_attention(CrossAttention, 2, backend, mode=mode, scale=scale)
    with torch.no_grad():
        got, _ = cross(x[:, :3], None, memory=x)
    expected = attention_ref(cross, x[:, :3], x, lambda b, t, s: True, scale=scale)
    np.testing.assert_allclose(as_np(got), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_softcap(backend: str, mode: str) -> None:
    """``attention.softcap``: softmax(cap tanh(scale q k^T / cap) + mask) v (Gemma 2), with a cache and a
    padding mask, so the cap comes before the mask."""
    module = make_attention(SelfAttention, 2, backend, mode=mode, scale=1.0, softcap=0.7)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(37))

    def visible(b: int, t: int, s: int) -> bool:
        return s == t or (s < t and not (b == 1 and s < 2))  # row 1: two padding keys; a query sees itself

    with torch.no_grad():
        got, _ = module(x, additive_mask(visible, 2, 5, 5))
        uncapped = attention_ref(module, x, x, visible, scale=1.0)
    expected = attention_ref(module, x, x, visible, scale=1.0, softcap=0.7)
    assert np.abs(expected - uncapped)[:, 2:].max() > 1e-3  # the cap changes the outputs: the test can fail
    np.testing.assert_allclose(as_np(got)[0], expected[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(as_np(got)[1, 2:], expected[1, 2:], atol=1e-5, rtol=1e-5)  # real queries


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_qkv_biases_apart_from_the_others(qkv_bias: bool, mode: str) -> None:
    """``qkv_bias`` decides the q, k and v projections' biases alone (Qwen2: those and no other)."""
    module = SelfAttention(
        16, 4, 2, 4, bias=not qkv_bias, dropout=0.0, backend="eager", qk_norm=None, qkv_bias=qkv_bias
    )
    randomise(module, seed=33)
    module.train(mode == "train")
    assert [p.bias is not None for p in (module.q_proj, module.k_proj, module.v_proj)] == [qkv_bias] * 3
    assert (module.o_proj.bias is not None) == (not qkv_bias)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(34))
    with torch.no_grad():
        got, _ = module(x, additive_mask(causal, 2, 5, 5))
    np.testing.assert_allclose(as_np(got), attention_ref(module, x, x, causal), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_kind", ["rmsnorm", "layernorm"])
def test_self_attention_qk_norm_then_rope(backend: str, norm_kind: str, mode: str) -> None:
    """qk-norm over head_dim on every q and k head, then RoPE, then causal attention (GQA 4/2)."""
    module = make_attention(SelfAttention, 2, backend, qk_norm=norm_kind, mode=mode)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(32))
    rotary = RotaryPositions(4, 100.0, 1.0).rotary(torch.arange(5).expand(2, 5))
    with torch.no_grad():
        got, _ = module(x, additive_mask(causal, 2, 5, 5), rotary=rotary)

    def bound(norm: nn.Module) -> Callable[[Vector], Vector]:
        return norm_ref(norm, norm_kind, 1e-5)

    expected = attention_ref(module, x, x, causal, qk_norm=bound, rope_theta=100.0)
    np.testing.assert_allclose(as_np(got), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_kv", [4, 1])
def test_self_attention_with_cache_matches_full_sequence(backend: str, n_kv: int, mode: str) -> None:
    """Prefill 4 tokens, then 3 more with the cache: the new rows equal full causal attention."""
    module = make_attention(SelfAttention, n_kv, backend, bias=False, mode=mode)
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(33))
    past_len = 4
    with torch.no_grad():
        _, past = module(x[:, :past_len], None, is_causal=True)
        mask = additive_mask(lambda b, t, s: s <= past_len + t, 2, 3, 7)
        got, (k, _) = module(x[:, past_len:], mask, past=past)
    assert k.shape == (2, n_kv, 7, 4)
    expected = attention_ref(module, x[:, past_len:], x, lambda b, t, s: s <= past_len + t)
    np.testing.assert_allclose(as_np(got), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv", [4, 2, 1])
@pytest.mark.parametrize("qk_norm", [None, "rmsnorm"])
def test_training_projections_give_the_separate_products_gradients(n_kv: int, qk_norm: str | None) -> None:
    """The training path's stacked q/k/v product back-propagates into the three weights (and biases)
    exactly as three separate products do: gradients of the same loss through both paths agree."""
    grads = {}
    for mode in MODES:
        # float64: the gradients reach hundreds, where float32's rounding alone would differ by 1e-4
        module = make_attention(SelfAttention, n_kv, "sdpa", qk_norm=qk_norm, mode=mode).double()
        x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(36), dtype=torch.float64, requires_grad=True)
        out, (k, v) = module(x, None, is_causal=True)
        (out.square().sum() + k.sum() + v.square().sum()).backward()  # the cache outputs carry gradient too
        grads[mode] = {name: p.grad.clone() for name, p in module.named_parameters()} | {"x": x.grad.clone()}
    assert all(g.abs().max() > 0 for g in grads["eval"].values())  # every weight takes part in the loss
    for name, expected in grads["eval"].items():
        torch.testing.assert_close(grads["train"][name], expected, atol=1e-9, rtol=1e-9, msg=name)


def test_training_mode_takes_the_stacked_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """So the "train" cases above test the stacked product, and inference never pays for the copy."""
    calls = []
    packed = SelfAttention._packed_projections

    def spy(self: SelfAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        calls.append(self.training)
        return packed(self, x)

    monkeypatch.setattr(SelfAttention, "_packed_projections", spy)
    x = torch.randn(1, 3, 16)
    for mode in MODES:
        make_attention(SelfAttention, 2, "sdpa", mode=mode)(x, None, is_causal=True)
    assert calls == [True]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_cross_attention_with_key_padding(backend: str, n_kv: int) -> None:
    """Non-causal attention from 3 decoder tokens to 6 encoder tokens, padding keys masked."""
    module = make_attention(CrossAttention, n_kv, backend)
    gen = torch.Generator().manual_seed(34)
    x, memory = torch.randn(2, 3, 16, generator=gen), torch.randn(2, 6, 16, generator=gen)
    real = [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0]]  # row 1: left and right padding

    def visible(b: int, t: int, s: int) -> bool:
        return bool(real[b][s])

    mask = additive_mask(visible, 2, 1, 6)  # (B, 1, 1, S), broadcast over queries
    with torch.no_grad():
        got, memory_kv = module(x, mask, memory=memory)
        again, _ = module(x, mask, memory_kv=memory_kv)  # cached encoder keys/values
    expected = attention_ref(module, x, memory, visible)
    np.testing.assert_allclose(as_np(got), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(as_np(again), expected, atol=1e-5, rtol=0)
