"""Logits processors in numpy, each a formula applied to a (rows, vocab) array in place.

The order follows HF transformers' ``generate()``, so options mean what its users expect:
first the processors that change scores (repetition penalty, no-repeat n-grams, the minimum
length's EOS ban), then the warpers that shape the sampling distribution (temperature, top-k,
top-p, min-p). The score processors and top-k give removed tokens ``-inf``; top-p and min-p work
on the distribution that follows (one softmax for both) and give them probability 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

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


COLD = 1e-3  # temperatures below it scale the logits after subtracting each row's largest
COLDEST = 1e-30  # temperatures below it act as it (its reciprocal is within float32's range)


def temperature(logits: np.ndarray, value: float) -> None:
    """Divide by the temperature (> 0); 1 leaves the distribution as it is.

    Dividing float32 logits by a tiny temperature overflows (1e-40 as float32 is 0): every positive logit
    becomes inf and the row's draw is no longer the argmax's. Below `COLD` each row's largest logit is
    subtracted first, so the scaled logits are at most 0 and the largest stays 0: as the temperature falls
    the distribution narrows onto the argmax, as it should; `COLDEST` bounds the factor."""
    if value == 1.0:
        return
    if value < COLD:
        logits -= logits.max(axis=-1, keepdims=True)
        logits *= np.float32(1.0 / max(value, COLDEST))
        return
    logits /= value


def top_k(logits: np.ndarray, k: int) -> None:
    """Keep the ``k`` largest logits per row (ties with the k-th are kept too); 0 disables."""
    if k <= 0 or k >= logits.shape[-1]:
        return
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]  # (R, 1)
    np.copyto(logits, NEG_INF, where=logits < kth)  # several times faster than boolean-mask assignment


NUCLEUS_HEAD = 256  # the most likely tokens `nucleus_floor` sorts first


def top_p(probs: np.ndarray, p: float) -> None:
    """Nucleus, on a row-normalised distribution (R, V) in place: keep the most likely tokens while the
    mass ahead of them is below ``p`` (so always the top token), zero the rest (ties with the last kept
    one are kept). The caller renormalises."""
    if p < 1.0:
        probs *= probs >= nucleus_floor(probs, p)  # 9x faster than a masked copy when most tokens stay


def nucleus_floor(probs: np.ndarray, p: float) -> np.ndarray:
    """(R, 1): per row of ``probs`` (R, V, rows summing to 1), the smallest probability `top_p` keeps.

    A peaked row's nucleus lies among its `NUCLEUS_HEAD` largest probabilities (found in linear
    time), and only those are sorted. A flat row's nucleus holds most of the vocabulary; it is
    sorted whole, ascending, and the dropped tail found from below: a token is dropped while the
    ascending running sum through it stays within ``total - p`` (the mass ahead of it then reaches
    ``p``). Running sums over a whole row are searched in two levels (`_first_past`): numpy's cumsum
    of 24,576 floats into float64 takes longer than sorting them. Random-weight models give flat rows.
    """
    rows, vocab = probs.shape
    floor = np.empty((rows, 1), dtype=probs.dtype)
    m = min(vocab, NUCLEUS_HEAD)
    peaked = np.zeros(rows, dtype=bool)
    candidates = np.flatnonzero(m * probs.max(axis=-1).astype(np.float64) >= p)  # others' heads hold less than p
    if len(candidates):
        head = np.partition(probs[candidates], vocab - m, axis=-1)[:, vocab - m :]  # (C, m) the largest, unordered
        reach = (head.sum(axis=-1, dtype=np.float64) >= p) | (m == vocab)
        if reach.any():
            ordered = np.sort(head[reach], axis=-1)[:, ::-1]  # (P, m) descending
            kept = np.minimum(_first_past(ordered, np.full(len(ordered), p), inclusive=True) + 1, m)  # (P,) >= 1
            floor[candidates[reach], 0] = ordered[np.arange(len(ordered)), kept - 1]
            peaked[candidates[reach]] = True
    if not peaked.all():
        ascending = np.sort(probs[~peaked], axis=-1)  # (F, V)
        budget = ascending.sum(axis=-1, dtype=np.float64) - p  # (F,) the mass the dropped tail may hold
        dropped = _first_past(ascending, budget, inclusive=False)  # (F,) tokens below the floor, < V
        floor[~peaked, 0] = ascending[np.arange(len(ascending)), dropped]
    return floor


def _first_past(values: np.ndarray, targets: np.ndarray, inclusive: bool) -> np.ndarray:
    """Per row of ``values`` (R, n), non-negative, the first index whose running sum (float64) reaches
    (``inclusive``) or passes its row's ``targets`` (R,); the last index where none does. Block totals
    first, then a running sum inside one block (`sample_with` says why)."""
    rows, n = values.shape
    short = np.less if inclusive else np.less_equal  # "not there yet"
    if n <= 4 * SAMPLE_BLOCK:
        running = np.cumsum(values, axis=-1, dtype=np.float64)
        return np.minimum(short(running, targets[:, None]).sum(axis=-1), n - 1)
    blocks = -(-n // SAMPLE_BLOCK)
    padded = np.pad(values, ((0, 0), (0, blocks * SAMPLE_BLOCK - n))) if n % SAMPLE_BLOCK else values
    ends = np.cumsum(padded.reshape(rows, blocks, SAMPLE_BLOCK).sum(axis=-1, dtype=np.float64), axis=-1)
    found = np.empty(rows, dtype=np.int64)
    for r in range(rows):
        b = min(int(short(ends[r], targets[r]).sum()), blocks - 1)
        before = ends[r, b - 1] if b else 0.0
        block = padded[r, b * SAMPLE_BLOCK : (b + 1) * SAMPLE_BLOCK]
        found[r] = min(
            b * SAMPLE_BLOCK + int(short(before + np.cumsum(block, dtype=np.float64), targets[r]).sum()), n - 1
        )
    return found


def min_p(probs: np.ndarray, fraction: float) -> None:
    """Zero, in place, probabilities below ``fraction`` times the row's top probability (R, V); the
    ratio does not depend on normalisation, so it may follow `top_p` before renormalising."""
    if fraction > 0.0:
        probs *= probs >= fraction * probs.max(axis=-1, keepdims=True)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in the logits' precision (``-inf`` entries get probability 0)."""
    weights = logits - logits.max(axis=-1, keepdims=True)
    np.exp(weights, out=weights)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


def exp_weights(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``exp(logits - max)`` in place: the softmax's weights before dividing by their total,
    which sampling does not need (each row's largest weight is exactly 1; ``-inf`` entries get 0)."""
    logits -= logits.max(axis=-1, keepdims=True)
    return np.exp(logits, out=logits)


def row_sums(values: np.ndarray) -> np.ndarray:
    """(R,) float64 sums of the rows of a float32 (R, n) array, through a matrix-vector product: BLAS
    sums in float32 with several accumulators (a relative error near 1e-7, as fine as the float32
    values themselves) about 6x faster than numpy's pairwise sum into float64."""
    return (np.ascontiguousarray(values) @ _ones(values.shape[-1], values.dtype)).astype(np.float64)


@functools.cache
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    return np.ones(n, dtype=dtype)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sample_nucleus(
    probs: np.ndarray, weights: np.ndarray, p: float, draw: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """One token per row from ``weights`` (R, V) within the row's top-p nucleus of ``probs`` (R, V,
    non-negative; the nucleus is relative to each row's total, so rows need not be normalised), without
    finding the nucleus: rejection sampling. ``draw(rows)`` gives a uniform in (0, 1] for each of those
    row indices. ``weights`` is ``probs`` or a part of it (min-p zeroes tokens after top-p in HF's
    order).

    A drawn token is in the nucleus when the mass of the tokens likelier than it is below ``p`` (the
    nucleus keeps the likeliest tokens while the mass ahead is below ``p``, and ties with the last
    one). If it is not, no token as unlikely as it is in the nucleus either: those leave the row's
    weights and the row draws again. A draw kept is thus a draw from ``weights`` restricted to the
    nucleus, the distribution `top_p` then `sample_with` give; it costs a draw and a sum over the row
    (two or three passes) where the nucleus cost a sort, and a flat row (random weights: 80% of the
    vocabulary in the nucleus at p = 0.9) is kept at the first draw 90% of the time.
    """
    tokens = np.empty(len(probs), dtype=np.int64)
    todo = np.arange(len(probs))
    mine, current = probs, weights
    limit = p * row_sums(mine)  # (R,) the mass ahead of a token in the nucleus is below it
    likelier = np.empty(mine.shape, dtype=mine.dtype)
    while True:
        chosen = sample_with(current, draw(todo))  # (T,)
        drawn = mine[np.arange(len(todo)), chosen][:, None]  # (T, 1)
        np.greater(mine, drawn, out=likelier[: len(todo)])  # as 0 / 1 in the weights' type: a product sums it
        ahead = np.matmul(mine[:, None, :], likelier[: len(todo), :, None])[:, 0, 0]  # (T,) mass of likelier tokens
        inside = ahead < limit
        tokens[todo[inside]] = chosen[inside]
        if inside.all():
            return tokens
        out = ~inside
        current = current[out] * likelier[: len(todo)][out]  # drop every token no likelier than the rejected one
        todo, mine, limit = todo[out], mine[out], limit[out]


def sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row drawn from ``probs`` (R, V); zero-probability tokens are never drawn."""
    return sample_with(probs, 1.0 - rng.random(probs.shape[0]))


SAMPLE_BLOCK = 256  # tokens per block of `sample_with`'s two-level search


def sample_with(probs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The token per row at which the cumulative probability first reaches ``draws`` (R,) in (0, 1] times
    the row's total: inverse-CDF sampling with given uniform draws.

    The CDF is searched in two levels, block totals then one block: the cumulative sum over the whole
    vocabulary, in float64, cost more than the rest of a sampled step of a small model (1 ms for 16
    rows of 24,576 tokens). Block totals come from `row_sums` (float32 sums, float64 after), the
    running sums in float64; the two differ by about 1e-7 of a block's mass, so a draw that close to a
    block's end may fall on the block's last possible token instead of the next block's first: a shift
    of a token's chance of that order, below the float32 probabilities' own rounding. Tokens of
    weight 0 are never drawn.
    """
    rows, vocab = probs.shape
    blocks = -(-vocab // SAMPLE_BLOCK)
    padded = probs if vocab == blocks * SAMPLE_BLOCK else np.pad(probs, ((0, 0), (0, blocks * SAMPLE_BLOCK - vocab)))
    totals = row_sums(padded.reshape(rows * blocks, SAMPLE_BLOCK)).reshape(rows, blocks)  # (R, blocks)
    ends = np.cumsum(totals, axis=-1)  # (R, blocks): the CDF at each block's end
    targets = draws * ends[:, -1]  # (R,) in (0, total]
    chosen = np.minimum((ends < targets[:, None]).sum(axis=-1), blocks - 1)  # (R,) the block holding each
    picked = np.arange(rows)
    block = padded.reshape(rows, blocks, SAMPLE_BLOCK)[picked, chosen]  # (R, SAMPLE_BLOCK) each row's block
    before = np.where(chosen > 0, ends[picked, np.maximum(chosen - 1, 0)], 0.0)  # (R,) the CDF before it
    running = before[:, None] + np.cumsum(block, axis=-1, dtype=np.float64)  # (R, SAMPLE_BLOCK)
    inside = (running < targets[:, None]).sum(axis=-1)  # (R,)
    last = SAMPLE_BLOCK - 1 - np.argmax(block[:, ::-1] > 0, axis=-1)  # (R,) each block's last possible token
    past = inside >= SAMPLE_BLOCK  # rounding put the target past the block's own sum
    inside = np.where(past, last, np.minimum(inside, SAMPLE_BLOCK - 1))
    zero = block[picked, inside] <= 0  # ... or onto a token that cannot be drawn
    inside = np.where(zero, last, inside)
    return np.minimum(chosen * SAMPLE_BLOCK + inside, vocab - 1)
