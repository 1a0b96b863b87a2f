"""Logits processors in numpy, each a formula applied to a (rows, vocab) array in place.

The order follows HF transformers' ``generate()``, so options mean what its users expect:
first the processors that change scores (repetition penalty, no-repeat n-grams, the minimum
length's EOS ban), then the warpers that shape the sampling distribution (temperature, top-k,
top-p, min-p). Removed tokens get ``-inf``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEG_INF = -np.inf


def repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> None:
    """CTRL's rule: a token already present has its logit divided by ``penalty`` if positive,
    multiplied by it if negative. ``seen`` is a (rows, vocab) bool presence matrix."""
    if penalty == 1.0:
        return
    picked = logits[seen]
    logits[seen] = np.where(picked > 0, picked / penalty, picked * penalty)


def occurrence_penalties(
    logits: np.ndarray, generated: Sequence[Sequence[int]], presence: float, frequency: float
) -> None:
    """OpenAI's presence and frequency penalties: ``logit[j] -= count[j] * frequency + (count[j] > 0) * presence``,
    where ``count[j]`` is how often row's generated tokens (not its prompt) hold token j."""
    if presence == 0.0 and frequency == 0.0:
        return
    for row, tokens in enumerate(generated):
        if len(tokens):
            ids, counts = np.unique(np.asarray(tokens, dtype=np.int64), return_counts=True)
            logits[row, ids] -= counts * frequency + presence


def banned_ngram_tokens(history: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an ``n``-gram already present in ``history``."""
    if n <= 0 or len(history) < n:
        return set()
    prefix = tuple(history[len(history) - n + 1 :]) if n > 1 else ()
    banned: set[int] = set()
    for start in range(len(history) - n + 1):
        if tuple(history[start : start + n - 1]) == prefix:
            banned.add(int(history[start + n - 1]))
    return banned


def no_repeat_ngrams(logits: np.ndarray, histories: Sequence[Sequence[int]], n: int) -> None:
    """Forbid, per row, every token that would repeat an ``n``-gram of that row's history."""
    if n <= 0:
        return
    for row, history in enumerate(histories):
        banned = banned_ngram_tokens(history, n)
        if banned:
            logits[row, list(banned)] = NEG_INF


def ban_tokens(logits: np.ndarray, rows: np.ndarray, tokens: Sequence[int]) -> None:
    """Forbid ``tokens`` in the rows where ``rows`` (bool, per row) is set: the minimum length's EOS ban."""
    if len(tokens) and rows.any():
        logits[np.ix_(np.flatnonzero(rows), list(tokens))] = NEG_INF


def temperature(logits: np.ndarray, value: float) -> None:
    """Divide by the temperature (> 0); 1 leaves the distribution as it is."""
    if value != 1.0:
        logits /= value


def top_k(logits: np.ndarray, k: int) -> None:
    """Keep the ``k`` largest logits per row (ties with the k-th are kept too); 0 disables."""
    if k <= 0 or k >= logits.shape[-1]:
        return
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]  # (R, 1)
    logits[logits < kth] = NEG_INF


def top_p(logits: np.ndarray, p: float) -> None:
    """Nucleus: keep the most likely tokens whose mass first reaches ``p``; always the top token.

    Only the head of the distribution is sorted: the ``m`` largest probabilities (found in linear
    time), with ``m`` growing until they hold mass ``p``. A peaked distribution needs a few dozen
    tokens, not a sort of the whole vocabulary. (Tokens tied with the last kept one are kept too.)
    """
    if p >= 1.0:
        return
    probs = softmax(logits)  # (R, V)
    vocab = probs.shape[-1]
    head = np.partition(probs, vocab - min(vocab, 256), axis=-1)[:, -min(vocab, 256) :]  # (R, m) largest, unordered
    if (head.sum(axis=-1) < p).any():
        head = probs  # a flat distribution: its nucleus needs most of the vocabulary
    head = np.sort(head, axis=-1)[:, ::-1]  # descending
    mass_before = np.cumsum(head, axis=-1) - head  # mass of the tokens ahead of each
    kept = (mass_before < p).sum(axis=-1)  # (R,) at least 1
    smallest_kept = head[np.arange(len(head)), kept - 1][:, None]  # (R, 1)
    logits[probs < smallest_kept] = NEG_INF


def min_p(logits: np.ndarray, fraction: float) -> None:
    """Drop tokens whose probability is below ``fraction`` times the row's top probability."""
    if fraction <= 0.0:
        return
    probs = softmax(logits)
    logits[probs < fraction * probs.max(axis=-1, keepdims=True)] = NEG_INF


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in the logits' precision (``-inf`` entries get probability 0)."""
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row drawn from ``probs`` (R, V); zero-probability tokens are never drawn."""
    cdf = np.cumsum(probs, axis=-1, dtype=np.float64)  # (R, V)
    u = (1.0 - rng.random(probs.shape[0]))[:, None] * cdf[:, -1:]  # in (0, total]
    return np.minimum((cdf < u).sum(axis=-1), probs.shape[-1] - 1).astype(np.int64)
