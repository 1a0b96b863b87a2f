"""Attention masks against a brute-force double loop over (query, key) of the stated rule.

Key j is visible to query i iff (causal => k_j <= q_i) and the pattern allows |q_i - k_j| and
key j is not padding -- or k_j == q_i (a query always sees itself, so no softmax row is empty).
Patterns: full (any distance), local (distance < window), sparse (distance < window or
distance % stride == 0, the Sparse Transformer's strided pattern).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nima.builders.masks import PATTERNS, build_attention_mask, build_padding_mask
from nima.builders.sizes import Sizes

# kind, constructor fields, the rule on a distance written out here
PATTERN_CASES: list[tuple[str, dict[str, int], Callable[[int], bool]]] = [
    ("full", {}, lambda d: True),
    ("local", {"window": 1}, lambda d: d < 1),
    ("local", {"window": 3}, lambda d: d < 3),
    ("sparse", {"window": 2, "stride": 3}, lambda d: d < 2 or d % 3 == 0),
    ("sparse", {"window": 1, "stride": 4}, lambda d: d < 1 or d % 4 == 0),
]
SIZES = Sizes(d_model=8)  # patterns read none of them
PADDING = [[1] * 9, [0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1, 1]]  # rows of (B, S=9)


def test_pattern_table_is_covered() -> None:
    """Every pattern kind is exercised below."""
    assert set(PATTERNS) == {kind for kind, _, _ in PATTERN_CASES}


def expected_allowed(
    rule: Callable[[int], bool], q_pos: list[int], k_pos: list[int], causal: bool, real: list[int] | None
) -> list[list[bool]]:
    """The visibility rule for one batch row, one (query, key) pair at a time."""
    rows = []
    for qi in q_pos:
        row = []
        for j, kj in enumerate(k_pos):
            visible = (not causal or kj <= qi) and rule(abs(qi - kj)) and (real is None or real[j] == 1)
            row.append(visible or kj == qi)
        rows.append(row)
    return rows


@pytest.mark.parametrize(("kind", "fields", "rule"), PATTERN_CASES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("past", [0, 4])
@pytest.mark.parametrize("padded", [False, True])
def test_mask_matches_rule(
    kind: str, fields: dict[str, int], rule: Callable[[int], bool], causal: bool, past: int, padded: bool
) -> None:
    """0 where the rule allows the key, the dtype's minimum elsewhere; (B|1, 1, T, S)."""
    t = 9 - past
    q_pos, k_pos = list(range(past, past + t)), list(range(past + t))
    padding = torch.tensor(PADDING)[:, -(past + t) :] if padded else None
    got = build_attention_mask(
        PATTERNS[kind](SIZES, **fields), torch.tensor(q_pos), torch.tensor(k_pos), causal, padding, None, torch.float32
    )
    batch = len(PADDING) if padded else 1
    assert got.shape == (batch, 1, t, past + t)
    low = torch.finfo(torch.float32).min
    for b in range(batch):
        real = padding[b].tolist() if padding is not None else None
        allowed = expected_allowed(rule, q_pos, k_pos, causal, real)
        for i in range(t):
            for j in range(past + t):
                assert float(got[b, 0, i, j]) == (0.0 if allowed[i][j] else low), (b, i, j)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mask_carries_bias_where_allowed(dtype: torch.dtype) -> None:
    """With a (1, H, T, S) bias: bias where visible, finfo(dtype).min where not, in ``dtype``."""
    past, t, n_heads = 2, 4, 3
    q_pos, k_pos = list(range(past, past + t)), list(range(past + t))
    bias = torch.randn(1, n_heads, t, past + t, generator=torch.Generator().manual_seed(5))
    padding = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    pattern = PATTERNS["local"](SIZES, window=3)
    got = build_attention_mask(pattern, torch.tensor(q_pos), torch.tensor(k_pos), True, padding, bias, dtype)
    assert got.shape == (2, n_heads, t, past + t)
    assert got.dtype == dtype
    for b in range(2):
        allowed = expected_allowed(lambda d: d < 3, q_pos, k_pos, True, padding[b].tolist())
        for h in range(n_heads):
            for i in range(t):
                for j in range(past + t):
                    want = float(bias[0, h, i, j].to(dtype)) if allowed[i][j] else torch.finfo(dtype).min
                    assert float(got[b, h, i, j]) == want, (b, h, i, j)


def test_padding_query_sees_itself_only() -> None:
    """A padding query whose every key is hidden still sees itself: no all-masked row."""
    padding = torch.tensor([[0, 0, 1, 1]])
    got = build_attention_mask(
        PATTERNS["full"](SIZES), torch.arange(4), torch.arange(4), True, padding, None, torch.float32
    )
    visible = (got[0, 0] == 0).tolist()
    assert visible == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
        [False, False, True, True],
    ]


def test_padding_mask_for_cross_attention() -> None:
    """build_padding_mask: (B, 1, 1, S), 0 on real keys and finfo.min on padding."""
    padding = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    got = build_padding_mask(padding, torch.float32)
    assert got.shape == (2, 1, 1, 4)
    low = torch.finfo(torch.float32).min
    for b in range(2):
        for s in range(4):
            assert float(got[b, 0, 0, s]) == (0.0 if padding[b, s] else low)
