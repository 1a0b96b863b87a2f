"""Moving cached rows to other cache indices: what a running batch needs when rows join or leave.

A decode batch shares one cache index space: every row's newest token sits at the last index, and
shorter rows are padded on the left (`nima.runtime.rows.left_pad`). A row prefilled alone starts at
index 0, so joining a batch that is further along moves it right; trimming columns that no row
still uses moves every row left. Most graphs do not care where a row sits — their attention depends
on the ``position_ids`` fed and on the mask — so moving is copying. The ``ort`` target's fused
attention is the exception: GroupQueryAttention rotates queries and keys by cache index
(`nima.export.targets.ort.gqa_op`), so a cached key carries its index in its rotation. Moving such a
row by ``d`` indices rotates its keys by ``d`` more: RoPE's rotation by ``i + d`` is the rotation by
``i`` followed by one by ``d``, and the scores, which depend on index differences only, come out as
a left-padded batch's would.

The angles per index are the builder's (`nima.builders.positions.RotaryPositions.cache_rotary`),
computed here in numpy so the server needs no torch; a test holds the two equal.
"""

from __future__ import annotations

import math

import numpy as np

from nima.export.options import gqa_blocker
from nima.manifest import Manifest
from nima.spec import ModelSpec
from nima.spec.variants import RopePosition


def key_angles(spec: ModelSpec, manifest: Manifest) -> np.ndarray | None:
    """The rotation angle per cache index of each key dimension pair, (hd/2,) float64, where the graph
    rotates cached keys by cache index (the ``ort`` target's GroupQueryAttention graph, RoPE, no qk-norm,
    as `nima.export.targets.ort.model.FusedSelfAttention` decides); None where moving a row is copying."""
    position = spec.position
    fused = manifest.target == "ort" and gqa_blocker(spec, manifest.dtype) is None
    if not fused or not isinstance(position, RopePosition) or spec.attention.qk_norm:
        return None
    head_dim = spec.head_dim
    inv_freq = position.theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (hd/2,)
    scaling = position.frequency_scaling
    if scaling is not None:  # Llama 3.1's, as `nima.builders.positions.llama3_frequencies`
        low, high, original = scaling.low_freq_factor, scaling.high_freq_factor, scaling.original_max_seq_len
        wavelength = 2 * math.pi / inv_freq
        smooth = (original / wavelength - low) / (high - low)
        between = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
        scaled = np.where(wavelength > original / low, inv_freq / scaling.factor, inv_freq)
        inside = (wavelength >= original / high) & (wavelength <= original / low)
        inv_freq = np.where(inside, between, scaled)
    return inv_freq / position.scaling_factor


def rotate_keys(keys: np.ndarray, shifts: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """``keys`` (B, H_kv, P, hd) with row b rotated by ``shifts[b]`` more cache indices (LLaMA layout:
    dimension i pairs with i + hd/2); rows with shift 0 are returned unchanged."""
    if not shifts.any():
        return keys
    theta = shifts[:, None].astype(np.float64) * angles[None, :]  # (B, hd/2)
    cos = np.cos(theta)[:, None, None, :]  # (B, 1, 1, hd/2)
    sin = np.sin(theta)[:, None, None, :]
    half = keys.shape[-1] // 2
    first, second = keys[..., :half].astype(np.float64), keys[..., half:].astype(np.float64)
    rotated = np.concatenate((first * cos - second * sin, second * cos + first * sin), axis=-1)
    return rotated.astype(keys.dtype)


def place_rows(
    parts: list[np.ndarray], lengths: list[int], total: int, shifts: np.ndarray, angles: np.ndarray | None, key: bool
) -> np.ndarray:
    """One (B, H_kv, total, hd) tensor from per-group tensors (b_i, H_kv, lengths[i], hd), each group
    right-aligned (left-padded with zeros) and, for keys under ``angles``, rotated by its rows' ``shifts``."""
    rows = sum(part.shape[0] for part in parts)
    _, heads, _, size = parts[0].shape
    out = np.zeros((rows, heads, total, size), dtype=parts[0].dtype)
    start = 0
    for part, length in zip(parts, lengths, strict=True):
        out[start : start + part.shape[0], :, total - length :] = part
        start += part.shape[0]
    if key and angles is not None:
        out = rotate_keys(out, shifts, angles)
    return out
