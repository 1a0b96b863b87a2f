"""The numpy logits processors against their formulas, written out element by element."""

from __future__ import annotations

import numpy as np
import pytest

from nima.runtime import processors
from nima.runtime.processors import banned_ngram_tokens


def test_repetition_penalty_divides_positive_and_multiplies_negative() -> None:
    logits = np.array([[2.0, -1.0, 0.5, -3.0, 4.0]], dtype=np.float32)
    seen = np.array([[True, True, False, False, True]])
    processors.repetition_penalty(logits, seen, 2.0)
    np.testing.assert_allclose(logits, [[1.0, -2.0, 0.5, -3.0, 2.0]])


def test_banned_ngrams_by_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        history = rng.integers(0, 4, rng.integers(0, 12)).tolist()
        n = int(rng.integers(1, 4))
        expected = {
            t for t in range(4) if any(history[i : i + n] == (history + [t])[-n:] for i in range(len(history) - n + 1))
        }
        assert banned_ngram_tokens(history, n) == expected, (history, n)


def test_top_k_keeps_k_largest() -> None:
    logits = np.array([[0.1, 3.0, -1.0, 2.0, 2.5]])
    processors.top_k(logits, 2)
    assert np.isfinite(logits).tolist() == [[False, True, False, False, True]]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = np.array([[0.5, 0.05, 0.3, 0.15]])
    kept = probs.copy()
    processors.top_p(kept, 0.75)  # 0.5 + 0.3 reaches 0.75: keep those two only
    assert (kept > 0).tolist() == [[True, False, True, False]]
    kept = probs.copy()
    processors.top_p(kept, 0.85)  # needs the third most likely too
    assert (kept > 0).tolist() == [[True, False, True, True]]
    kept = probs.copy()
    processors.top_p(kept, 0.01)  # always the top token
    assert (kept > 0).tolist() == [[True, False, False, False]]


def brute_force_nucleus(probs: np.ndarray, p: float) -> np.ndarray:
    """(R, V) bool: per row, tokens in descending order, each kept while the mass before it is below p,
    and any tied with the last one kept."""
    kept = np.zeros(probs.shape, dtype=bool)
    for r, row in enumerate(probs):
        mass = 0.0
        for token in np.argsort(-row, kind="stable"):
            if mass >= p:
                break
            kept[r, token] = True
            mass += float(row[token])
        kept[r] |= row >= row[kept[r]].min()  # tokens tied with the last kept one stay too
    return kept


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0, 12.0])  # from flat (the tail sorted) to peaked (the head)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_on_a_large_vocabulary_against_a_full_sort(scale: float, p: float) -> None:
    rng = np.random.default_rng(int(scale * 10) + int(p * 100))
    logits = (rng.standard_normal((6, 5000)) * scale).astype(np.float32)
    logits[0] *= 0.01  # one nearly uniform row beside the others
    probs = processors.softmax(logits)
    kept = probs.copy()
    processors.top_p(kept, p)
    expected = brute_force_nucleus(probs, p)
    assert ((kept > 0) == expected).all(), f"{((kept > 0) != expected).sum()} tokens differ"


def test_min_p_relative_to_top_probability() -> None:
    probs = np.array([[0.5, 0.05, 0.3, 0.15]])
    processors.min_p(probs, 0.35)  # threshold 0.175
    assert (probs > 0).tolist() == [[True, False, True, False]]


def test_ban_tokens_only_in_marked_rows() -> None:
    logits = np.zeros((2, 4))
    processors.ban_tokens(logits, np.array([True, False]), [1, 3])
    assert np.isinf(logits).tolist() == [[False, True, False, True], [False] * 4]


def test_forced_tokens_only_in_marked_rows() -> None:
    """Marked rows keep only the forced tokens, at score 0 (transformers' forced BOS/EOS); others are untouched."""
    logits = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    processors.force_tokens(logits, np.array([True, False]), [0, 2])
    assert logits.tolist() == [[0.0, -np.inf, 0.0, -np.inf], [1.0, 2.0, 3.0, 4.0]]


def test_forced_first_and_last_tokens_in_decoding(bundles: dict) -> None:
    """forced_eos_token_ids ends a greedy row at max_new_tokens with an end token; forced_bos_token_id applies only
    where the history is one token (a decoder-only prompt of one token here)."""
    from nima.runtime import Generator

    generator = Generator(bundles["llama"][0])
    tokens = generator.generate([[4, 5, 6]], max_new_tokens=7, do_sample=False, forced_eos_token_ids=[9])[0]
    assert tokens.token_ids[-1] == 9 and len(tokens.token_ids) == 7
    assert tokens.completions[0].finish_reason == "length"  # 9 is no end token here: the length ended it
    assert generator.generate([[4]], max_new_tokens=3, do_sample=False, forced_bos_token_id=11)[0].token_ids[0] == 11
    plain = generator.generate([[4, 5]], max_new_tokens=3, do_sample=False)[0].token_ids
    assert generator.generate([[4, 5]], max_new_tokens=3, do_sample=False, forced_bos_token_id=11)[0].token_ids == plain


def test_temperature_scales_logits() -> None:
    logits = np.array([[1.0, -2.0]])
    processors.temperature(logits, 0.5)
    np.testing.assert_allclose(logits, [[2.0, -4.0]])


def test_occurrence_penalties_follow_openai_formula() -> None:
    logits = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    generated = [[2, 2, 0, 2], []]
    processors.occurrence_penalties(logits, generated, presence=0.5, frequency=0.25)
    # token 0 once: 1 - (1 * 0.25 + 0.5); token 2 three times: 3 - (3 * 0.25 + 0.5); row 1 generated nothing
    np.testing.assert_allclose(logits, [[0.25, 2.0, 1.75, 4.0], [1.0, 1.0, 1.0, 1.0]])


def test_negative_occurrence_penalties_raise_repeats() -> None:
    logits = np.zeros((1, 3), dtype=np.float32)
    processors.occurrence_penalties(logits, [[1, 1]], presence=-1.0, frequency=-0.5)
    np.testing.assert_allclose(logits, [[0.0, 2.0, 0.0]])


def _chi_square_critical(df: int, z: float = 3.29) -> float:
    """Upper chi-square quantile (Wilson-Hilferty; z = 3.29 is the 0.9995 normal quantile)."""
    return df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3


@pytest.mark.parametrize(
    ("scale", "p", "min_p", "factor"),
    # flat rows are rejected often; rows given as weights (a multiple of the probabilities) mean the same
    [(0.3, 0.5, 0.0, 1.0), (0.3, 0.9, 0.0, 1.0), (3.0, 0.3, 0.0, 1.0), (1.0, 0.8, 0.4, 1.0), (0.3, 0.9, 0.3, 37.0)],
)
def test_nucleus_rejection_sampling_draws_the_nucleus_distribution(
    scale: float, p: float, min_p: float, factor: float
) -> None:
    """`sample_nucleus` never builds the nucleus; its draws must still follow the weights restricted to
    it (brute force: a full sort), by a chi-square test over 20,000 draws of one row."""
    rng = np.random.default_rng(int(10 * scale + 100 * p))
    row = processors.softmax((rng.standard_normal((1, 200)) * scale).astype(np.float32))[0]  # (V,)
    probs = np.repeat(row[None] * np.float32(factor), 20_000, axis=0)  # (N, V): one row, drawn N times at once
    weights = probs.copy()
    processors.min_p(weights, min_p)
    tokens = processors.sample_nucleus(probs, weights, p, lambda rows: 1.0 - rng.random(len(rows)))
    allowed = brute_force_nucleus(row[None], p)[0] & (row >= min_p * row.max())
    assert set(tokens.tolist()) <= set(np.flatnonzero(allowed).tolist()), "a token outside the nucleus"
    expected = np.where(allowed, row, 0.0) / np.where(allowed, row, 0.0).sum() * len(tokens)
    counts = np.bincount(tokens, minlength=len(row))
    chi = (((counts - expected) ** 2)[allowed] / expected[allowed]).sum()
    assert chi < _chi_square_critical(int(allowed.sum()) - 1), f"chi-square {chi:.1f} over {allowed.sum()} tokens"


def test_exp_weights_are_the_softmax_times_a_row_constant() -> None:
    """Sampling draws from ``exp(logits - max)`` without dividing by the total: the softmax up to a
    per-row factor, the largest weight exactly 1, ``-inf`` giving 0."""
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((3, 1000)) * 4).astype(np.float32)
    logits[1, :10] = -np.inf
    expected = processors.softmax(logits.copy())
    weights = processors.exp_weights(logits)  # in place
    assert weights is logits
    np.testing.assert_array_equal(weights.max(axis=-1), 1.0)
    assert (weights[1, :10] == 0).all()
    np.testing.assert_allclose(weights / weights.sum(axis=-1, keepdims=True), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 7), (5, 24_576), (96, 256)])
def test_row_sums_against_float64_sums(shape: tuple[int, int]) -> None:
    """`row_sums` (float32 BLAS sums) within 1e-6 of numpy's float64 sums, also for a strided view."""
    values = np.random.default_rng(6).random((shape[0], 2 * shape[1]), dtype=np.float32)[:, ::2]
    sums = processors.row_sums(values)
    assert sums.dtype == np.float64 and sums.shape == (shape[0],)
    np.testing.assert_allclose(sums, values.sum(axis=-1, dtype=np.float64), rtol=1e-6)
