"""Speculative decoding with a draft bundle: a small model of the same tokenizer proposes tokens, the
target checks them all in one step (Leviathan et al. 2023; Chen et al. 2023).

A decode step of the target reads every weight once whether it checks one token or several. Each
round the draft decodes up to ``k`` tokens alone (cheap: it is small), the target runs the last
chosen token and the drafted ones in one multi-token step (`DecoderSession.step_all`) and so has
its own distribution at every drafted position. Greedy: the drafted tokens are kept while they are
the target's argmax, and the target's choice at the first disagreement (or after the last drafted
token) is added, so the tokens are plain greedy decoding's. Sampling: drafted token x, drawn from
the draft's warped distribution q, is kept with probability min(1, p(x) / q(x)) under the target's
warped p; the first rejected one is replaced by a draw from max(0, p - q) renormalised; after a
round kept whole, one more token is drawn from p. Each token is then distributed as sampling from
the target alone (the standard rejection rule), though not the same draws for a seed.

(A rule that gives plain sampling's very draws exists: the target draws each position itself, by
inverse CDF from the shared stream, and keeps a drafted token while it equals that draw, the draft
proposing with a copy of the stream. It keeps far fewer drafted tokens: on random weights, where
rows are near flat, a drafted token matched 20% of the time against 92% for min(1, p / q) with an
8-bit copy of the target as the draft (T = 0.7), because small differences spread over 24,576
tokens shift every token's interval of the CDF. Not used.)

Both caches drop the rejected positions (`DecoderSession.truncate`); the draft catches up by
feeding the tokens it has not seen in its next round. The draft length adapts as prompt lookup's
does (`nima.runtime.lookup`): longer after a round kept whole, shorter after a rejection, and
drafting pauses for 1, 2, 4, ... 32 steps while even one drafted token keeps failing, or for 1, 2, 4,
... 128 steps while the recent draft rounds gave fewer tokens per second than single steps do (both
timed as they run: a draft that agrees half the time, or costs as much as the target, is not worth
it; a `Generator` remembers that across its calls). Paused steps take the single-row path, as
plain decoding's, so a draft that does not fit the text costs little. Sampling with a seed is not
timed (only the failed-draft pauses apply): the seed then reproduces the text, run after run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from nima.runtime.options import is_greedy
from nima.runtime.processors import sample
from nima.runtime.rows import Limits, Row, scores_changed, warp
from nima.runtime.session import DecoderSession, KVCache, RowStepper
from nima.spec.generation import GenerationSpec

MAX_PAUSE = 32  # steps without drafting, at most, while one drafted token keeps failing (the text's doing)
MAX_SLOW_PAUSE = 128  # ... while drafting gives fewer tokens per second than single steps (the pair's)


def draft_problem(options: GenerationSpec, seq2seq: bool) -> str | None:
    """Why a draft bundle cannot decode under ``options``, or None: one decoder-only sequence, greedy or
    sampled, whose scores only the warpers change."""
    if seq2seq:
        return "not for encoder-decoders"
    if options.num_beams > 1 or options.num_return_sequences > 1:
        return "one sequence at a time, without beams"
    if scores_changed(options):
        return "not with repetition, presence or frequency penalties, n-gram bans or min_new_tokens"
    if options.slide_context or options.prompt_lookup_num_tokens:
        return "not with slide_context or prompt lookup"
    return None


class _Chooser:
    """Greedy choice, or a draw from the warped distribution, of one row's next token."""

    def __init__(self, options: GenerationSpec, rng: np.random.Generator) -> None:
        self.options, self.rng, self.greedy = options, rng, is_greedy(options)

    def probs(self, logits: np.ndarray) -> np.ndarray:  # (N, V) raw -> (N, V) warped probabilities
        return warp(logits.copy(), self.options)

    def draw(self, probs: np.ndarray) -> int:  # (V,) -> token
        return int(sample(probs[None], self.rng)[0])


def decode_speculative(
    target: DecoderSession,
    draft: DecoderSession,
    row: Row,
    limits: Limits,
    options: GenerationSpec,
    rng: np.random.Generator,
    k: int,
    draft_context: int,
    pace: Pace | None = None,
) -> Iterator[int]:
    """Decode one decoder-only ``row`` with ``draft`` proposing up to ``k`` tokens per target step (its
    positions below ``draft_context``); yields each token and sets ``row.finish_reason``. ``pace``: what
    earlier rows with this pair measured (`Pace`; a `Generator` keeps one), else a fresh one."""
    choose = _Chooser(options, rng)
    prompt = row.prompt
    capacity = limits.capacity([len(prompt)])
    ones = np.ones((1, capacity), dtype=np.int64)  # every step's mask is a prefix of it
    t_cache = target.empty_cache(1, None, capacity)
    d_cache = draft.empty_cache(1, None, min(capacity, draft_context))
    ids = np.array([prompt], dtype=np.int64)  # (1, P)
    logits, t_cache = target.step(ids, ones[:, : len(prompt)], np.arange(len(prompt), dtype=np.int64)[None], t_cache)
    token = int(logits[0].argmax()) if choose.greedy else choose.draw(choose.probs(logits)[0])
    row.tokens.append(token)
    row.finish_reason = limits.finish_reason(row)
    yield token
    # A seeded sampled row drafts by its tokens alone: timings differ from run to run, and which steps
    # drafted decides the draws, so a seed would not reproduce its text (nor would a judgement carried
    # over from the generator's earlier rows). Its pace is its own and never timed: it always "pays".
    timed = choose.greedy or options.seed is None
    pace = Pace() if pace is None or not timed else pace
    width = k
    if pace.single is None:
        # the first PROBE steps are single ones: `Pace` needs their speed to judge the draft rounds (a draft
        # that agrees every time never pauses, and so would never measure it)
        wait = PROBE
    elif pace.pays:  # a new text: pauses for failed drafts start over
        wait = pace.pause = 0
    else:  # a pair known not to pay starts paused, as long as it last paused
        wait = pace.pause
    stepper: RowStepper | None = None  # one-token steps while drafting pauses take the single-row path
    while row.finish_reason is None:
        history = row.history
        room = min(limits.max_new_tokens - len(row.tokens), limits.context - len(history))  # tokens still allowed
        n = min(width, room - 1, draft_context - len(history)) if wait == 0 else 0
        wait = max(0, wait - 1)
        if n <= 0:
            if stepper is None:
                stepper = target.row_stepper(t_cache)
            past = stepper.cache.length
            start = time.perf_counter()
            logits = stepper(token, past, ones[:, : past + 1])  # (V,)
            token = int(logits.argmax()) if choose.greedy else choose.draw(choose.probs(logits[None])[0])
            if timed:
                pace.plain(time.perf_counter() - start)
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
            yield token
            continue
        if stepper is not None:
            t_cache, stepper = stepper.cache, None
        start = time.perf_counter()
        d_cache, guesses, guess_probs = _draft(draft, d_cache, history, n, ones, choose)
        past = t_cache.length  # = len(history) - 1: the last chosen token is not cached yet
        fed = [token, *guesses]
        positions = np.arange(past, past + len(fed), dtype=np.int64)[None]
        fed_ids = np.array([fed], dtype=np.int64)  # (1, n + 1)
        scores, t_cache = target.step_all(fed_ids, ones[:, : past + len(fed)], positions, t_cache)  # (n + 1, V)
        chosen = list(_verify(scores, guesses, guess_probs, choose))
        if timed:
            pace.round(len(chosen), time.perf_counter() - start)
        kept = 0
        for token in chosen:
            kept += 1
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
            yield token
            if row.finish_reason is not None:
                break
        t_cache = target.truncate(t_cache, past + kept)  # the fed tokens the row kept: the last one and accepted drafts
        d_cache = draft.truncate(d_cache, min(d_cache.length, len(row.history) - 1))
        whole = kept == len(fed)  # every drafted token taken (and one more chosen)
        width = min(k, width + 2) if whole else max(1, width - 1)
        if (not whole and kept == 1 and n == 1) or not pace.pays:  # drafting does not pay: stop for a while
            pace.pause = min(2 * pace.pause or 1, MAX_PAUSE if pace.pays else MAX_SLOW_PAUSE)
            wait = pace.pause
        elif whole:
            pace.pause = 0


PROBE = 2  # single steps before the first draft round


class Pace:
    """Whether drafting pays on this machine and this text: tokens per second of the recent draft rounds (the
    draft's runs, its catching up after a pause and the target's check) against single steps, each an
    exponential moving average. Until both are measured, drafting is taken to pay; decoding starts with
    `PROBE` single steps, so the single speed is known from the first round on. ``pause``: the length of
    the current pause, doubled each time drafting is found not to pay. A `Generator` keeps one for its
    draft across calls, so a pair that does not pay on this machine starts its next row paused instead
    of finding out again (the draft's first round feeds it the whole prompt: the costliest one)."""

    SMOOTHING = 0.3  # weight of the newest measurement

    def __init__(self) -> None:
        self.single: float | None = None  # tokens/s of single steps
        self.drafted: float | None = None  # tokens/s of draft rounds
        self.pause = 0  # steps

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.SMOOTHING) * old + self.SMOOTHING * new

    def plain(self, seconds: float) -> None:
        self.single = self._mix(self.single, 1.0 / max(seconds, 1e-9))

    def round(self, tokens: int, seconds: float) -> None:
        self.drafted = self._mix(self.drafted, tokens / max(seconds, 1e-9))

    @property
    def pays(self) -> bool:
        return self.single is None or self.drafted is None or self.drafted >= self.single


def _draft(
    draft: DecoderSession, cache: KVCache, history: list[int], n: int, ones: np.ndarray, choose: _Chooser
) -> tuple[KVCache, list[int], list[np.ndarray]]:
    """``n`` tokens from the draft after ``history`` (it first feeds what its cache lacks), and the warped
    distribution each was drawn from (sampling; empty when greedy)."""
    guesses: list[int] = []
    probs: list[np.ndarray] = []
    feed = history[cache.length :]  # at least the last chosen token
    for _ in range(n):
        past = cache.length
        positions = np.arange(past, past + len(feed), dtype=np.int64)[None]
        logits, cache = draft.step(np.array([feed], dtype=np.int64), ones[:, : past + len(feed)], positions, cache)
        if choose.greedy:
            guess = int(logits[0].argmax())
        else:
            q = choose.probs(logits)[0]  # (V,)
            guess = choose.draw(q)
            probs.append(q)
        guesses.append(guess)
        feed = [guess]
    return cache, guesses, probs


def _verify(scores: np.ndarray, guesses: list[int], guess_probs: list[np.ndarray], choose: _Chooser) -> Iterator[int]:
    """The tokens a round gives from the target's ``scores`` at the fed positions, (n + 1, V): the drafted
    tokens it keeps, then its own choice where it stopped keeping them (or after the last)."""
    if choose.greedy:
        for i, best in enumerate(scores.argmax(axis=-1).tolist()):
            yield best
            if i >= len(guesses) or guesses[i] != best:
                return
        return
    p = choose.probs(scores)  # (n + 1, V)
    for i, (guess, q) in enumerate(zip(guesses, guess_probs, strict=True)):
        if choose.rng.random() * q[guess] < p[i, guess]:  # accepted with probability min(1, p / q)
            yield guess
            continue
        residual = np.maximum(p[i] - q, 0.0)
        total = residual.sum()
        yield choose.draw(residual / total if total > 0 else p[i])
        return
    yield choose.draw(p[len(guesses)])
