"""Beam search over a batch of prompts, ``num_beams`` cache rows per prompt, as transformers' ``generate``
does it (its tokens and scores, tested against it).

Per step, each beam's logits become log-probabilities and then go through the processors
(repetition penalty, no-repeat n-grams, minimum length: transformers' order in beam search), and
are added to the beam's sum. Of the ``max(2, 1 + EOS ids) * num_beams`` best candidates, those
ending in EOS (or completing a stop string) become finished hypotheses if they rank within the
first ``num_beams``, and the best ``num_beams`` others become the next beams; the cache is
reordered by the beams' source rows. A finished hypothesis scores
``sum_logprob / length ** length_penalty``, ``length`` counting generated tokens, EOS included.
At the length limit every candidate ranked within the first ``num_beams`` finishes.

A prompt is done once ``num_beams`` hypotheses have finished and, by ``early_stopping``:

- ``True``: at once;
- ``False`` (the default, transformers' too): when the best live beam's sum divided by the
  *current* length to the ``length_penalty`` is no better than the worst finished score (a
  heuristic: a longer beam could still score better with ``length_penalty > 0``);
- ``"never"``: when no live beam can beat the worst finished score even at the longest allowed
  length (a sound bound where ``length_penalty > 0``; log-probabilities only fall).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from nima.runtime.processors import log_softmax
from nima.runtime.rows import (
    FINISH_CONTEXT,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Limits,
    Row,
    left_pad,
    presence,
    process_scores,
)
from nima.runtime.session import DecoderSession, Value
from nima.spec.generation import GenerationSpec


@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: its generated tokens, length-normalised score and why it ended."""

    tokens: list[int]
    score: float
    finish_reason: str


class _Finished:
    """The best ``size`` hypotheses of one prompt."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[Hypothesis] = []

    def add(self, hypothesis: Hypothesis) -> None:
        self.items.append(hypothesis)
        self.items.sort(key=lambda h: -h.score)
        del self.items[self.size :]

    def full(self) -> bool:
        return len(self.items) >= self.size

    def worst(self) -> float:
        return self.items[-1].score


T = TypeVar("T")


def finish(steps: Generator[None, None, T]) -> T:
    """Run a stepped search to its end; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def beam_steps(
    session: DecoderSession,
    prompts: list[list[int]],
    options: GenerationSpec,
    limits: Limits,
    pad_id: int,
    fixed: dict[str, Value] | None = None,
) -> Generator[None, None, list[list[Hypothesis]]]:
    """Beam search, one model step at a time: it yields after each step's logits are used and before
    the next step runs (so another user of the session may run between two), and returns the best
    ``num_return_sequences`` hypotheses per prompt, best first (``fixed``: see `KVCache`). `finish`
    runs it to the end; a server advances it between the steps of its running batch."""
    k, penalty = options.num_beams, options.length_penalty
    width = max(2, 1 + len(limits.eos_ids)) * k  # candidates kept per prompt and step, as transformers keeps
    ids, mask, positions = left_pad(prompts, pad_id)
    cache = session.empty_cache(len(prompts), fixed, limits.capacity([len(p) for p in prompts]))
    logits, cache = session.step(ids, mask, positions, cache)  # (N, V)
    expand = np.repeat(np.arange(len(prompts)), k)  # each prompt's prefill serves its k beams
    cache, mask, positions, logits = session.select(cache, expand), mask[expand], positions[expand], logits[expand]
    beams = [Row(list(prompts[n])) for n in expand]
    scores = np.full((len(prompts), k), -np.inf)  # (N, K) summed log-probabilities
    scores[:, 0] = 0.0  # at first all beams are the same prompt: only one may expand
    finished = [_Finished(k) for _ in prompts]
    max_new = [min(limits.max_new_tokens, limits.context - len(p)) for p in prompts]
    active = np.arange(len(prompts))  # prompts still searching; their beams are the batch rows
    step = 0
    while True:
        length = step + 1  # generated tokens once this step's token is added
        logprobs = log_softmax(logits)  # (A*K, V); transformers applies the processors after this in beam search
        seen = presence([b.history for b in beams], logits.shape[-1]) if options.repetition_penalty != 1.0 else None
        process_scores(logprobs, beams, seen, options, limits.eos_ids)
        vocab = logits.shape[-1]
        candidates = scores[active].reshape(-1, 1) + logprobs  # (A*K, V)
        # NaN (a dead beam's -inf plus a -inf log-probability) as -inf; -inf itself stays -inf, which the
        # checks for dead candidates below rely on (nan_to_num's default would make it -1.8e308)
        candidates = np.nan_to_num(candidates, nan=-np.inf, neginf=-np.inf).reshape(len(active), k * vocab)
        best = _top(candidates, min(width, k * vocab))  # (A, width) flat indices, best first
        sources, tokens, next_scores, keep = [], [], [], []
        for a, n in enumerate(active):
            at_limit = length >= max_new[n]
            src, tok, sc = _extend(
                a, n, best[a], candidates[a], beams, finished[n], limits, k, vocab, length, penalty, at_limit
            )
            if at_limit:
                continue
            if _done(finished[n], max(sc), options.early_stopping, penalty, length, max_new[n]):
                continue
            keep.append(a)
            sources += [a * k + s for s in src]
            tokens += tok
            next_scores.append(sc)
        if not keep:
            break
        rows = np.array(sources, dtype=np.int64)
        beams = [Row(beams[r].prompt, beams[r].tokens + [t]) for r, t in zip(rows, tokens, strict=True)]
        active = active[keep]
        scores[active] = np.array(next_scores)
        cache, mask, positions = session.select(cache, rows), mask[rows], positions[rows]
        ids = np.array(tokens, dtype=np.int64)[:, None]  # (A*K, 1)
        positions = positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1)
        yield  # this step's logits are used up: the session is free until the next step
        logits, cache = session.step(ids, mask, positions, cache)
        step += 1
    return [f.items[: options.num_return_sequences] for f in finished]


def _top(candidates: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` largest entries per row, largest first (ties: lower index first)."""
    part = np.argpartition(-candidates, m - 1, axis=-1)[:, :m]  # (A, m) unordered
    values = np.take_along_axis(candidates, part, axis=-1)
    order = np.lexsort((part, -values), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def _extend(
    a: int,
    n: int,
    best: np.ndarray,
    candidates: np.ndarray,
    beams: list[Row],
    finished: _Finished,
    limits: Limits,
    k: int,
    vocab: int,
    length: int,
    penalty: float,
    at_limit: bool,
) -> tuple[list[int], list[int], list[float]]:
    """Split one prompt's ranked candidates into finished hypotheses and the next ``k`` beams; at the
    length limit (``at_limit``) the first ``k`` candidates all finish."""
    sources: list[int] = []
    tokens: list[int] = []
    values: list[float] = []
    for rank, flat in enumerate(best.tolist()):
        value = float(candidates[flat])
        if value == -np.inf:
            break
        beam, token = divmod(flat, vocab)
        extended = beams[a * k + beam].tokens + [token]
        reason = FINISH_EOS if token in limits.eos_ids else None
        if reason is None and limits.stop_strings and limits.decode is not None:
            text = limits.decode(beams[a * k + beam].prompt, extended)
            reason = FINISH_STOP if any(s in text for s in limits.stop_strings) else None
        if at_limit:
            if rank >= k:
                break
            cut = FINISH_LENGTH if length >= limits.max_new_tokens else FINISH_CONTEXT
            finished.add(Hypothesis(extended, value / length**penalty, reason or cut))
            continue
        if reason is not None:
            if rank < k:
                finished.add(Hypothesis(extended, value / length**penalty, reason))
            continue
        sources.append(beam)
        tokens.append(token)
        values.append(value)
        if len(sources) == k:
            break
    while len(sources) < k:  # fewer live candidates than beams: pad with dead beams
        sources.append(0)
        tokens.append(0)
        values.append(-np.inf)
    return sources, tokens, values


def _done(finished: _Finished, best_live: float, early: bool | str, penalty: float, length: int, max_new: int) -> bool:
    """Whether a prompt's search can stop (see the module docstring)."""
    if best_live == -np.inf:
        return True
    if not finished.full():
        return False
    if early is True:
        return True
    horizon = max_new if early == "never" and penalty > 0 else length
    return best_live / horizon**penalty <= finished.worst()
