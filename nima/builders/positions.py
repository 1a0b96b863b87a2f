"""Position schemes. Each one plugs into the stack at one of three places:

- ``embed(position_ids)``: a vector added to the token embeddings (sinusoidal, learned);
- ``rotary(position_ids)``: cos/sin tables that rotate queries and keys (RoPE);
- ``bias(q_pos, k_pos)``: an additive attention bias per head (ALiBi, T5 relative).

The base class returns ``None`` for all three, so a stack calls all of them without
branching on the kind. Biases depend only on the distance between cache indices, which left
padding does not change for real tokens.

Two more members tell a fused attention kernel (the ``ort`` export target) what the scheme
needs from it, so the exporter asks the scheme instead of checking its class:
``cache_rotary(length)`` gives the cos/sin tables a kernel may rotate with *by cache index*
(None: the scheme has no such rotation, and the layer applies ``rotary`` itself), and
``biases_scores`` says whether ``bias`` adds anything to the attention scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Rotary = tuple[torch.Tensor, torch.Tensor]


class PositionScheme(nn.Module):
    """No position information (NoPE); the base of every scheme."""

    biases_scores = False  # whether `bias` returns a bias (a fused kernel then needs it as an input)

    def embed(self, position_ids: torch.Tensor) -> torch.Tensor | None:  # (B, T) -> (B, T, d) | None
        return None

    def rotary(self, position_ids: torch.Tensor) -> Rotary | None:  # (B, T) -> 2 x (B, 1, T, hd) | None
        return None

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, bidirectional: bool) -> torch.Tensor | None:
        return None  # (T,), (S,) -> (1, H, T, S) | None

    def cache_rotary(self, length: int) -> Rotary | None:  # -> 2 x (length, hd/2) | None
        """cos/sin of each cache index below ``length``, for a kernel that rotates queries and keys by
        cache index instead of by position id; None when the scheme has no rotation a kernel can do.

        A scheme may give them only when its attention scores depend on the distance between two
        positions alone: left padding shifts a row's cache indices from its position ids by a
        constant, which then changes nothing."""
        return None


class SinusoidalPositions(PositionScheme):
    """With w_i = base^(-2i/d): ``interleaved``, PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i) (the paper);
    ``split``, PE[p, i] = sin(p w_i), PE[p, d/2 + i] = cos(p w_i) (tensor2tensor, Marian). Computed on the fly."""

    def __init__(self, d_model: int, base: float, layout: str = "interleaved") -> None:
        super().__init__()
        if layout not in ("interleaved", "split"):
            raise ValueError(f"unknown sinusoid layout {layout!r}")
        self.split = layout == "split"
        inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (d/2,)

    def embed(self, position_ids: torch.Tensor) -> torch.Tensor:
        angles = position_ids.float()[..., None] * self.inv_freq  # (B, T, d/2)
        if self.split:
            return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (B, T, d): sines, then cosines
        pe = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (B, T, d/2, 2)
        return pe.flatten(-2)  # (B, T, d): sin and cos interleaved


class LearnedPositions(PositionScheme):
    """A learned table of position vectors (GPT-2's wpe); position p reads row p + ``offset`` (BART keeps two
    rows before position 0)."""

    def __init__(self, max_seq_len: int, d_model: int, offset: int = 0) -> None:
        super().__init__()
        self.offset = offset
        self.table = nn.Embedding(max_seq_len + offset, d_model)

    def embed(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table(position_ids + self.offset if self.offset else position_ids)  # (B, T, d)


Llama3 = tuple[float, float, float, int]  # factor, low_freq_factor, high_freq_factor, original context


def llama3_frequencies(inv_freq: torch.Tensor, llama3: Llama3) -> torch.Tensor:
    """Llama 3.1's scaled frequencies (hd/2,): long wavelengths divided by ``factor``, short ones kept,
    the band between interpolated by where its wavelength lies."""
    factor, low, high, original = llama3
    wavelength = 2 * math.pi / inv_freq  # (hd/2,)
    smooth = (original / wavelength - low) / (high - low)  # 0 at the long end of the band, 1 at the short end
    between = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    return torch.where((wavelength >= original / high) & (wavelength <= original / low), between, scaled)


class RotaryPositions(PositionScheme):
    """RoPE in the LLaMA / GPT-NeoX layout: dimension i pairs with i + head_dim/2; ``llama3``: Llama 3.1's
    frequency scaling."""

    def __init__(self, head_dim: int, theta: float, scaling_factor: float, llama3: Llama3 | None = None) -> None:
        super().__init__()
        self.scaling_factor = scaling_factor
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        if llama3 is not None:
            inv_freq = llama3_frequencies(inv_freq, llama3)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (hd/2,)

    def rotary(self, position_ids: torch.Tensor) -> Rotary:
        pos = position_ids.float() / self.scaling_factor  # linear interpolation
        freqs = pos[..., None] * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, hd)
        return emb.cos(), emb.sin()

    def cache_rotary(self, length: int) -> Rotary:
        index = torch.arange(length, dtype=torch.float32) / self.scaling_factor  # (L,)
        angles = index[:, None] * self.inv_freq[None, :]  # (L, hd/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, hd) by the angles in ``rotary``."""
    cos, sin = rotary
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # rotate_half
    return (x * cos + rotated * sin).to(x.dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head slopes from the ALiBi paper: a geometric sequence starting at 2^(-8/n).

    For a head count that is not a power of two, the paper takes the slopes of the closest
    smaller power of two and fills in with every other slope of the next power of two.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class AlibiPositions(PositionScheme):
    """Bias = -slope_h * |i - j|: attention decays linearly with distance, per head."""

    biases_scores = True

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)  # (H,)

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        distance = (q_pos[:, None] - k_pos[None, :]).abs().float()  # (T, S)
        return -self.slopes[None, :, None, None] * distance  # (1, H, T, S)


def relative_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of ``relative = key_pos - query_pos``: exact for short, log-spaced for long distances."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # clamp(min=1) keeps log finite where the exact branch is used anyway
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositions(PositionScheme):
    """T5 relative position bias: one learned scalar per (bucket, head), shared by all layers."""

    biases_scores = True

    def __init__(self, n_heads: int, num_buckets: int, max_distance: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.table = nn.Embedding(num_buckets, n_heads)

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        relative = k_pos[None, :] - q_pos[:, None]  # (T, S)
        buckets = relative_bucket(relative, bidirectional, self.num_buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1)[None]  # (1, H, T, S)


# The closed table of position kinds: kind -> factory(sizes, **position fields) (`nima.builders.sizes`).
POSITIONS: dict[str, Callable[..., PositionScheme]] = {
    "sinusoidal": lambda sizes, base, layout: SinusoidalPositions(sizes.d_model, base, layout),
    "learned": lambda sizes, offset: LearnedPositions(sizes.max_seq_len, sizes.d_model, offset),
    "relative": lambda sizes, num_buckets, max_distance: RelativePositions(sizes.n_heads, num_buckets, max_distance),
    "rope": lambda sizes, theta, scaling_factor, frequency_scaling=None: RotaryPositions(
        sizes.head_dim,
        theta,
        scaling_factor,
        None
        if frequency_scaling is None
        else (
            frequency_scaling.factor,
            frequency_scaling.low_freq_factor,
            frequency_scaling.high_freq_factor,
            frequency_scaling.original_max_seq_len,
        ),
    ),
    "alibi": lambda sizes: AlibiPositions(sizes.n_heads),
    "none": lambda sizes: PositionScheme(),
}
