"""Prompt-lookup decoding: greedy decoding that drafts tokens from the text itself and checks them in one step.

Decoding one token reads every weight once; checking several tokens in one step reads them once too.
When the text repeats itself — code being edited, a document being quoted, a summary reusing the
source's phrases, a model caught in a loop — the tokens after the latest earlier occurrence of the
last few tokens are a good guess for what comes next (Saxena's prompt lookup, transformers'
``prompt_lookup_num_tokens``). Each step feeds the last chosen token and up to ``k`` drafted ones;
the graph's logits at every fed position (``logits_to_keep``) say which drafted tokens greedy
decoding would have chosen: the longest agreeing prefix is kept, plus the next chosen token, and the
cache drops the rest (`DecoderSession.truncate`; a shared buffer just forgets them). The tokens are
greedy decoding's, one position at a time: only how many are found per step changes. Where nothing
matches, a step is an ordinary one-token step; after a rejected draft the next ones are shorter
(down to one token), after a draft taken whole longer again (up to ``k``), as transformers adapts
its assistant's draft length; when even one drafted token keeps failing, drafting pauses for 1, 2,
4, ... 32 steps, which run on the single-row path. So text that stops repeating costs little.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from nima.runtime.options import is_greedy
from nima.runtime.rows import Limits, Row, scores_changed
from nima.runtime.session import DecoderSession, RowStepper
from nima.spec.generation import GenerationSpec

MAX_NGRAM = 3  # the longest tail looked up; shorter ones are tried after it, down to one token


def lookup_problem(options: GenerationSpec, seq2seq: bool) -> str | None:
    """Why prompt lookup cannot run under ``options``, or None: it checks greedy choices of one decoder row."""
    if seq2seq:
        return "not for encoder-decoders (their drafts would come from the source)"
    if not is_greedy(options) or options.num_return_sequences > 1:
        return "greedy decoding only (drafts are checked against the greedy choice)"
    if scores_changed(options):
        return "not with repetition, presence or frequency penalties, n-gram bans or min_new_tokens"
    if options.slide_context:
        return "not with slide_context"
    return None


def draft(history: list[int], k: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the last n tokens of ``history``
    (n from ``max_ngram`` down to 1; the first n with a match decides); [] when none occurs."""
    tokens = np.asarray(history, dtype=np.int64)
    size = len(tokens)
    for n in range(min(max_ngram, size - 1), 0, -1):
        tail = tokens[size - n :]
        windows = np.lib.stride_tricks.sliding_window_view(tokens[: size - 1], n)  # starts 0 .. size - 1 - n
        found = np.flatnonzero((windows == tail).all(axis=1))
        if len(found):
            start = int(found[-1]) + n  # after the latest occurrence
            return tokens[start : start + k].tolist()
    return []


def decode_lookup(
    session: DecoderSession,
    row: Row,
    limits: Limits,
    k: int,
    propose: Callable[[list[int], int], list[int]] = draft,
) -> Iterator[int]:
    """Greedy decoding of one decoder-only ``row`` with prompt lookup (``k`` drafted tokens at most per
    step); yields each token as `nima.runtime.search.decode_rows` would, and sets ``row.finish_reason``.
    ``propose(history, n)``: the drafter (`draft`; bench/speculative.py passes one that is always wrong)."""
    prompt = row.prompt
    capacity = limits.capacity([len(prompt)])
    cache = session.empty_cache(1, None, capacity)
    ids = np.array([prompt], dtype=np.int64)  # (1, P)
    logits, cache = session.step(ids, np.ones_like(ids), np.arange(len(prompt), dtype=np.int64)[None], cache)
    token = int(logits[0].argmax())
    row.tokens.append(token)
    row.finish_reason = limits.finish_reason(row)
    yield token
    ones = np.ones((1, capacity), dtype=np.int64)  # every step's mask is a prefix of it
    width = k  # drafted tokens per step: up by 2 after a draft is taken whole, down by 1 after a rejection
    pause = wait = 0  # after a one-token draft fails: steps without drafting, doubling while drafts keep failing
    stepper: RowStepper | None = None  # one-token steps between drafts take the single-row path
    while row.finish_reason is None:
        history = row.history
        room = min(limits.max_new_tokens - len(row.tokens), limits.context - len(history))  # tokens still allowed
        guess = propose(history, min(width, room - 1)) if room > 1 and wait == 0 else []
        wait = max(0, wait - 1)
        if not guess:
            if stepper is None:
                stepper = session.row_stepper(cache)
            past = stepper.cache.length
            token = int(stepper(token, past, ones[:, : past + 1]).argmax())
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
            yield token
            continue
        if stepper is not None:
            cache, stepper = stepper.cache, None
        fed = [token, *guess]
        past = cache.length  # = len(history) - 1: the last token is not in the cache yet
        positions = np.arange(past, past + len(fed), dtype=np.int64)[None]
        scores, cache = session.step_all(np.array([fed], dtype=np.int64), ones[:, : past + len(fed)], positions, cache)
        kept = 0  # fed tokens whose cache entries stay: the last chosen token and the accepted drafts
        for i in range(len(fed)):
            token = int(scores[i].argmax())
            kept = i + 1
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
            yield token
            if row.finish_reason is not None or i >= len(guess) or guess[i] != token:
                break
        if kept == len(fed):
            width, pause = min(k, width + 2), 0
        else:
            cache = session.truncate(cache, past + kept)
            if kept == 1 and width == 1:  # even one drafted token fails: stop drafting for a while
                pause = min(2 * pause or 1, 32)
                wait = pause
            width = max(1, width - 1)
