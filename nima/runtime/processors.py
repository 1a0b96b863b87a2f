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


def force_tokens(logits: np.ndarray, rows: np.ndarray, tokens: Sequence[int]) -> None:
    """In the rows where ``rows`` (bool, per row) is set, only ``tokens`` remain, each with score 0
    (transformers' forced BOS and EOS: the first token of an encoder-decoder's output, the last one
    at the length limit)."""
    if len(tokens) and rows.any():
        picked = np.flatnonzero(rows)
        logits[picked] = NEG_INF
        logits[np.ix_(picked, list(tokens))] = 0.0


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
    # a token is kept while the mass ahead of it is below p: through the first one where the mass reaches p
    kept = np.minimum(_first_reaching(head, p) + 1, head.shape[-1])  # (R,) at least 1
    smallest_kept = head[np.arange(len(head)), kept - 1][:, None]  # (R, 1)
    logits[probs < smallest_kept] = NEG_INF


def _first_reaching(values: np.ndarray, target: float) -> np.ndarray:
    """Per row of ``values`` (R, n), non-negative, the first index whose running sum (float64) reaches
    ``target``; the last index where none does. Block totals first, then a running sum inside one block
    (`sample_with` says why)."""
    rows, n = values.shape
    if n <= 4 * SAMPLE_BLOCK:
        return np.minimum((np.cumsum(values, axis=-1, dtype=np.float64) < target).sum(axis=-1), n - 1)
    blocks = -(-n // SAMPLE_BLOCK)
    padded = np.pad(values, ((0, 0), (0, blocks * SAMPLE_BLOCK - n))) if n % SAMPLE_BLOCK else values
    ends = np.cumsum(padded.reshape(rows, blocks, SAMPLE_BLOCK).sum(axis=-1, dtype=np.float64), axis=-1)
    found = np.empty(rows, dtype=np.int64)
    for r in range(rows):
        b = min(int((ends[r] < target).sum()), blocks - 1)
        before = ends[r, b - 1] if b else 0.0
        inside = int(
            (before + np.cumsum(padded[r, b * SAMPLE_BLOCK : (b + 1) * SAMPLE_BLOCK], dtype=np.float64) < target).sum()
        )
        found[r] = min(b * SAMPLE_BLOCK + inside, n - 1)
    return found


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
    return sample_with(probs, 1.0 - rng.random(probs.shape[0]))


SAMPLE_BLOCK = 256  # tokens per block of `sample_with`'s two-level search


def sample_with(probs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The token per row at which the cumulative probability first reaches ``draws`` (R,) in (0, 1] times
    the row's total: inverse-CDF sampling with given uniform draws.

    The CDF is searched in two levels, block totals then one block, in float64: the cumulative sum
    over the whole vocabulary, in float64, cost more than the rest of a sampled step of a small model
    (1 ms for 16 rows of 24,576 tokens). The block totals are summed in another order than one running
    sum, so a draw within about 1e-16 of a boundary may fall on the neighbouring token: a token's
    chance of being drawn is unchanged.
    """
    rows, vocab = probs.shape
    blocks = -(-vocab // SAMPLE_BLOCK)
    padded = probs if vocab == blocks * SAMPLE_BLOCK else np.pad(probs, ((0, 0), (0, blocks * SAMPLE_BLOCK - vocab)))
    totals = padded.reshape(rows, blocks, SAMPLE_BLOCK).sum(axis=-1, dtype=np.float64)  # (R, blocks)
    ends = np.cumsum(totals, axis=-1)  # (R, blocks): the CDF at each block's end
    targets = draws * ends[:, -1]  # (R,) in (0, total]
    chosen = np.minimum((ends < targets[:, None]).sum(axis=-1), blocks - 1)  # (R,) the block holding each
    tokens = np.empty(rows, dtype=np.int64)
    for r in range(rows):
        b = int(chosen[r])
        start = b * SAMPLE_BLOCK
        block = padded[r, start : start + SAMPLE_BLOCK]
        before = ends[r, b - 1] if b else 0.0
        inside = int((before + np.cumsum(block, dtype=np.float64) < targets[r]).sum())
        if inside >= len(block) or block[inside] <= 0:  # rounding put the target past the block's own sum
            inside = int(np.flatnonzero(block > 0)[-1])
        tokens[r] = min(start + inside, vocab - 1)
    return tokens
