"""Position schemes against their textbook formulas, each written out independently here.

Sinusoidal (Vaswani et al. 2017), RoPE in the LLaMA / GPT-NeoX rotate-half layout (Su et al.
2021), ALiBi slopes and biases (Press et al. 2022) and T5's relative position buckets (Raffel
et al. 2020, mesh-tensorflow ``_relative_position_bucket``). The references use Python ``math``
per element, never the function under test.
"""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from nima.builders.positions import (
    AlibiPositions,
    LearnedPositions,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositions,
    alibi_slopes,
    apply_rotary,
    relative_bucket,
)

# --- sinusoidal -----------------------------------------------------------------------------


@pytest.mark.parametrize(("d_model", "base"), [(8, 10000.0), (16, 10000.0), (6, 100.0)])
def test_sinusoidal_matches_vaswani_formula(d_model: int, base: float) -> None:
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d))."""
    position_ids = torch.tensor([[0, 1, 2, 3, 7, 12], [31, 5, 0, 9, 17, 24]])
    got = SinusoidalPositions(d_model, base).embed(position_ids)
    assert got.shape == (2, 6, d_model)
    expected = torch.empty(2, 6, d_model, dtype=torch.float64)
    for b in range(2):
        for t in range(6):
            p = int(position_ids[b, t])
            for i in range(d_model // 2):
                angle = p / base ** (2 * i / d_model)
                expected[b, t, 2 * i] = math.sin(angle)
                expected[b, t, 2 * i + 1] = math.cos(angle)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_sinusoidal_split_layout() -> None:
    """split: PE[p, i] = sin(p / base^(2i/d)), PE[p, d/2 + i] = cos(p / base^(2i/d)) (tensor2tensor, Marian)."""
    d_model, base = 10, 10000.0
    position_ids = torch.tensor([[0, 1, 4, 9, 30]])
    got = SinusoidalPositions(d_model, base, "split").embed(position_ids)
    expected = torch.empty(1, 5, d_model, dtype=torch.float64)
    for t in range(5):
        p = int(position_ids[0, t])
        for i in range(d_model // 2):
            angle = p / base ** (2 * i / d_model)
            expected[0, t, i] = math.sin(angle)
            expected[0, t, d_model // 2 + i] = math.cos(angle)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_learned_positions_offset() -> None:
    """Position p reads row p + offset of a table with max_seq_len + offset rows (BART: 2)."""
    table = LearnedPositions(max_seq_len=6, d_model=4, offset=2)
    assert table.table.weight.shape == (8, 4)
    position_ids = torch.tensor([[0, 1, 5], [3, 0, 2]])
    got = table.embed(position_ids)
    for b in range(2):
        for t in range(3):
            assert torch.equal(got[b, t], table.table.weight[int(position_ids[b, t]) + 2])


# --- RoPE -----------------------------------------------------------------------------------


def rope_reference(x: torch.Tensor, positions: list[int], theta: float, scaling: float) -> torch.Tensor:
    """Rotate-half RoPE as complex multiplication: z_i = x[i] + 1j x[i + hd/2], z_i * e^(1j angle)."""
    b_n, h_n, t_n, hd = x.shape
    half = hd // 2
    out = torch.empty(x.shape, dtype=torch.float64)
    for b in range(b_n):
        for h in range(h_n):
            for t in range(t_n):
                pos = positions[t] / scaling
                for i in range(half):
                    angle = pos * theta ** (-2 * i / hd)
                    z = complex(float(x[b, h, t, i]), float(x[b, h, t, i + half])) * cmath.exp(1j * angle)
                    out[b, h, t, i] = z.real
                    out[b, h, t, i + half] = z.imag
    return out


@pytest.mark.parametrize(
    ("head_dim", "theta", "scaling"), [(8, 10000.0, 1.0), (16, 10000.0, 1.0), (8, 500.0, 4.0), (4, 10.0, 2.0)]
)
def test_rope_matches_complex_rotation(head_dim: int, theta: float, scaling: float) -> None:
    """Dim i pairs with i + hd/2; the pair rotates by (pos / scaling) * theta^(-2i/hd)."""
    gen = torch.Generator().manual_seed(0)
    positions = [0, 1, 2, 5, 9, 17, 30]
    x = torch.randn(2, 3, len(positions), head_dim, generator=gen)
    rotary = RotaryPositions(head_dim, theta, scaling).rotary(torch.tensor([positions, positions]))
    got = apply_rotary(x, rotary)
    assert got.dtype == x.dtype
    torch.testing.assert_close(got.double(), rope_reference(x, positions, theta, scaling), atol=1e-5, rtol=0)


def llama3_reference(theta: float, head_dim: int, factor: float, low: float, high: float, original: int) -> list[float]:
    """Llama 3.1's frequencies, one at a time (Meta's ``apply_scaling``): a wavelength under
    original/high keeps its frequency, one over original/low is divided by factor, and between them
    the frequency is interpolated by smooth = (original / wavelength - low) / (high - low)."""
    frequencies = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / theta ** (i / head_dim)
        wavelength = 2 * math.pi / freq
        if wavelength < original / high:
            frequencies.append(freq)
        elif wavelength > original / low:
            frequencies.append(freq / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            frequencies.append((1 - smooth) * freq / factor + smooth * freq)
    return frequencies


@pytest.mark.parametrize(("head_dim", "original"), [(16, 64), (32, 8192), (64, 512)])
def test_llama3_frequency_scaling(head_dim: int, original: int) -> None:
    """Every band of the scaling: kept, divided and interpolated frequencies (each case has all three or two)."""
    theta, factor, low, high = 10000.0, 8.0, 1.0, 4.0
    got = RotaryPositions(head_dim, theta, 1.0, (factor, low, high, original)).inv_freq
    expected = torch.tensor(llama3_reference(theta, head_dim, factor, low, high, original), dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, atol=0, rtol=1e-5)
    plain = RotaryPositions(head_dim, theta, 1.0).inv_freq
    assert (got < plain * 0.99).any() and (got == plain).any()  # some divided, some kept


def test_rope_per_batch_positions() -> None:
    """Each batch row is rotated by its own position ids (left-padded rows start later)."""
    gen = torch.Generator().manual_seed(1)
    rows = [[0, 1, 2, 3], [0, 0, 0, 1]]
    x = torch.randn(2, 2, 4, 8, generator=gen)
    got = apply_rotary(x, RotaryPositions(8, 10000.0, 1.0).rotary(torch.tensor(rows)))
    for b, positions in enumerate(rows):
        expected = rope_reference(x[b : b + 1], positions, 10000.0, 1.0)
        torch.testing.assert_close(got[b : b + 1].double(), expected, atol=1e-5, rtol=0)


def test_rope_preserves_norm_and_relative_scores() -> None:
    """|rot(x, m)| = |x|, and <rot(q, m), rot(k, n)> depends only on m - n."""
    gen = torch.Generator().manual_seed(2)
    hd, n_pos = 16, 12
    q, k = torch.randn(hd, generator=gen), torch.randn(hd, generator=gen)
    rope = RotaryPositions(hd, 100.0, 1.0)
    rotary = rope.rotary(torch.arange(n_pos)[None])  # (1, 1, n_pos, hd) each
    rq = apply_rotary(q.expand(1, 1, n_pos, hd), rotary)[0, 0].double()  # q at every position
    rk = apply_rotary(k.expand(1, 1, n_pos, hd), rotary)[0, 0].double()
    torch.testing.assert_close(rq.norm(dim=-1), q.double().norm().expand(n_pos), atol=1e-5, rtol=0)
    scores = rq @ rk.T  # scores[m, n] = <rot(q, m), rot(k, n)>
    for m in range(n_pos):
        for n in range(n_pos):
            expected = float(scores[m - n, 0]) if m >= n else float(scores[0, n - m])
            assert abs(float(scores[m, n]) - expected) < 1e-5, (m, n)
    # The score does change with the offset, so the check above is not vacuous.
    assert abs(float(scores[0, 0]) - float(scores[3, 0])) > 1e-2
    assert abs(float(scores[0, 0]) - float(q @ k)) < 1e-5  # zero offset: plain dot product


# --- ALiBi ----------------------------------------------------------------------------------


def paper_slopes(n: int) -> list[float]:
    """ALiBi slopes: 2^(-8(i+1)/n) for a power of two n; otherwise the closest smaller power of
    two's slopes followed by every other slope of twice that power."""
    if n & (n - 1) == 0:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    closest = 1
    while closest * 2 < n:
        closest *= 2
    return paper_slopes(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("n_heads", [1, 2, 3, 4, 6, 8, 12, 16, 24])
def test_alibi_slopes_follow_paper(n_heads: int) -> None:
    """Slopes from the paper's rule, including non-power-of-two head counts."""
    got = alibi_slopes(n_heads)
    assert got.shape == (n_heads,)
    torch.testing.assert_close(
        got.double(), torch.tensor(paper_slopes(n_heads), dtype=torch.float64), atol=0, rtol=1e-6
    )


def test_alibi_slopes_known_values() -> None:
    """Literal values: 8 heads give 1/2 ... 1/256; 6 heads give 4 heads' slopes then 1/2, 1/8."""
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-k for k in range(1, 9)]), atol=0, rtol=0)
    torch.testing.assert_close(
        alibi_slopes(6), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]), atol=0, rtol=0
    )


@pytest.mark.parametrize("bidirectional", [False, True])
def test_alibi_bias_is_minus_slope_times_distance(bidirectional: bool) -> None:
    """bias[0, h, i, j] = -slope_h * |q_pos_i - k_pos_j|, with a cache offset."""
    n_heads, past, t = 6, 3, 4
    q_pos, k_pos = torch.arange(past, past + t), torch.arange(past + t)
    got = AlibiPositions(n_heads).bias(q_pos, k_pos, bidirectional)
    assert got.shape == (1, n_heads, t, past + t)
    slopes = paper_slopes(n_heads)
    for h in range(n_heads):
        for i in range(t):
            for j in range(past + t):
                expected = -slopes[h] * abs((past + i) - j)
                assert abs(float(got[0, h, i, j]) - expected) < 1e-6, (h, i, j)


# --- T5 relative buckets --------------------------------------------------------------------


def t5_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """Scalar T5 bucket of ``relative = key - query``.

    Bidirectional: half the buckets for keys after the query, half for the rest. Within a half,
    the first half of its buckets are exact distances; larger distances are log-spaced up to
    max_distance, and everything further shares the last bucket. Unidirectional: keys after
    the query count as distance 0.
    """
    offset = 0
    if bidirectional:
        num_buckets //= 2
        if relative > 0:
            offset = num_buckets
        distance = abs(relative)
    else:
        distance = max(-relative, 0)
    max_exact = num_buckets // 2
    if distance < max_exact:
        return offset + distance
    log_part = math.log(distance / max_exact) / math.log(max_distance / max_exact)
    return offset + min(max_exact + int(log_part * (num_buckets - max_exact)), num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 20), (32, 20), (8, 128)])
def test_relative_bucket_matches_t5(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    """Every relative position in [-300, 300] lands in T5's bucket."""
    relative = torch.arange(-300, 301)
    got = relative_bucket(relative, bidirectional, num_buckets, max_distance).tolist()
    expected = [t5_bucket(r, bidirectional, num_buckets, max_distance) for r in range(-300, 301)]
    mismatches = [(r, g, e) for r, g, e in zip(range(-300, 301), got, expected, strict=True) if g != e]
    assert not mismatches, mismatches[:10]
    assert min(got) >= 0 and max(got) == num_buckets - 1


def test_relative_bucket_known_values() -> None:
    """Hand-computed buckets for T5's defaults (32 buckets, max distance 128)."""
    # bidirectional: 16 per side, 8 exact; keys after the query use buckets 16..31
    cases_bi = {0: 0, -1: 1, -7: 7, -8: 8, -15: 9, -17: 10, -127: 15, -1000: 15, 1: 17, 7: 23, 8: 24, 1000: 31}
    for rel, bucket in cases_bi.items():
        assert int(relative_bucket(torch.tensor([rel]), True, 32, 128)) == bucket, rel
    # causal: 32 buckets for past keys, 16 exact; future keys are bucket 0
    cases_causal = {5: 0, 0: 0, -1: 1, -15: 15, -16: 16, -127: 31, -500: 31}
    for rel, bucket in cases_causal.items():
        assert int(relative_bucket(torch.tensor([rel]), False, 32, 128)) == bucket, rel


@pytest.mark.parametrize("bidirectional", [False, True])
def test_relative_bias_gathers_table(bidirectional: bool) -> None:
    """bias[0, h, i, j] = table[bucket(k_pos_j - q_pos_i), h], shape (1, H, T, S)."""
    n_heads, num_buckets, max_distance = 3, 8, 20
    module = RelativePositions(n_heads, num_buckets, max_distance)
    with torch.no_grad():
        module.table.weight.copy_(torch.randn(num_buckets, n_heads, generator=torch.Generator().manual_seed(3)))
    table = module.table.weight.detach()
    past, t = 25, 5
    q_pos, k_pos = torch.arange(past, past + t), torch.arange(past + t)
    with torch.no_grad():
        got = module.bias(q_pos, k_pos, bidirectional)
    assert got.shape == (1, n_heads, t, past + t)
    for h in range(n_heads):
        for i in range(t):
            for j in range(past + t):
                bucket = t5_bucket(j - (past + i), bidirectional, num_buckets, max_distance)
                assert float(got[0, h, i, j]) == float(table[bucket, h]), (h, i, j)
