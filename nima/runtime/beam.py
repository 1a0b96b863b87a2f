"""Beam search over a batch of prompts, ``num_beams`` cache rows per prompt.

Per step, each prompt's beams are extended by every token; of the ``2 * num_beams`` best
candidates (by summed log-probability), those ending in EOS (or completing a stop string) become
finished hypotheses if they rank within the first ``num_beams``, and the best ``num_beams`` others
become the next beams; the cache is reordered by the beams' source rows. A finished hypothesis
scores ``sum_logprob / length ** length_penalty``, ``length`` counting generated tokens, EOS
included. A prompt is done when ``num_beams`` hypotheses have finished and either
``early_stopping`` is set or no live beam can still beat the worst of them (a sound bound:
log-probabilities only fall, so with ``length_penalty > 0`` the best a beam can reach is its sum
over the longest allowed length). At the length limit, live beams are added as they stand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nima.runtime.processors import log_softmax
from nima.runtime.rows import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Limits, Row, left_pad, presence, process_scores
from nima.runtime.session import DecoderSession, Value
from nima.spec.sections import GenerationSpec


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


def beam_search(
    session: DecoderSession,
    prompts: list[list[int]],
    options: GenerationSpec,
    limits: Limits,
    pad_id: int,
    fixed: dict[str, Value] | None = None,
) -> list[list[Hypothesis]]:
    """The best ``num_return_sequences`` hypotheses per prompt, best first (``fixed``: see `KVCache`)."""
    k, penalty = options.num_beams, options.length_penalty
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
        seen = presence([b.history for b in beams], logits.shape[-1]) if options.repetition_penalty != 1.0 else None
        process_scores(logits, beams, seen, options, limits.eos_ids)
        vocab = logits.shape[-1]
        candidates = scores[active].reshape(-1, 1) + log_softmax(logits)  # (A*K, V)
        candidates = np.nan_to_num(candidates, nan=-np.inf).reshape(len(active), k * vocab)  # (A, K*V)
        best = _top(candidates, min(2 * k, k * vocab))  # (A, 2K) flat indices, best first
        sources, tokens, next_scores, keep = [], [], [], []
        for a, n in enumerate(active):
            src, tok, sc = _extend(a, n, best[a], candidates[a], beams, finished[n], limits, k, vocab, length, penalty)
            if length >= max_new[n]:  # the length limit: live beams finish as they stand
                for s, t, value in zip(src, tok, sc, strict=True):
                    if np.isfinite(value):
                        row = beams[a * k + s]
                        reason = FINISH_LENGTH
                        finished[n].add(Hypothesis(row.tokens + [t], value / length**penalty, reason))
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
) -> tuple[list[int], list[int], list[float]]:
    """Split one prompt's ranked candidates into finished hypotheses and the next ``k`` beams."""
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
            text = limits.decode(extended)
            reason = FINISH_STOP if any(s in text for s in limits.stop_strings) else None
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


def _done(finished: _Finished, best_live: float, early: bool, penalty: float, length: int, max_new: int) -> bool:
    """Whether a prompt's search can stop (see the module docstring)."""
    if best_live == -np.inf:
        return True
    if not finished.full():
        return False
    if early:
        return True
    reachable = best_live / (max_new if penalty > 0 else length) ** penalty
    return reachable <= finished.worst()
