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
matches, a step is an ordinary one-token step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nima.runtime.options import is_greedy
from nima.runtime.rows import Limits, Row, scores_changed
from nima.runtime.session import DecoderSession
from nima.spec.sections import GenerationSpec

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


def decode_lookup(session: DecoderSession, row: Row, limits: Limits, k: int) -> Iterator[int]:
    """Greedy decoding of one decoder-only ``row`` with prompt lookup (``k`` drafted tokens at most per
    step); yields each token as `nima.runtime.search.decode_rows` would, and sets ``row.finish_reason``."""
    prompt = row.prompt
    cache = session.empty_cache(1, None, limits.capacity([len(prompt)]))
    ids = np.array([prompt], dtype=np.int64)  # (1, P)
    logits, cache = session.step(ids, np.ones_like(ids), np.arange(len(prompt), dtype=np.int64)[None], cache)
    token = int(logits[0].argmax())
    row.tokens.append(token)
    row.finish_reason = limits.finish_reason(row)
    yield token
    while row.finish_reason is None:
        history = row.history
        room = min(limits.max_new_tokens - len(row.tokens), limits.context - len(history))  # tokens still allowed
        guess = draft(history, min(k, room - 1)) if room > 1 else []
        fed = [token, *guess]
        past = cache.length  # = len(history) - 1: the last token is not in the cache yet
        ids = np.array([fed], dtype=np.int64)  # (1, T)
        mask = np.ones((1, past + len(fed)), dtype=np.int64)
        positions = np.arange(past, past + len(fed), dtype=np.int64)[None]
        if guess:
            scores, cache = session.step_all(ids, mask, positions, cache)  # (T, V)
        else:
            last, cache = session.step(ids, mask, positions, cache)
            scores = last  # (1, V)
        kept = 0  # fed tokens whose cache entries stay: the last chosen token and the accepted drafts
        for i in range(len(fed)):
            token = int(scores[i].argmax())
            kept = i + 1
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
            yield token
            if row.finish_reason is not None or i >= len(guess) or guess[i] != token:
                break
        if kept < len(fed):
            cache = session.truncate(cache, past + kept)
