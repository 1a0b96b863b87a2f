"""Generating past the context: each further token from the last ``max_seq_len`` tokens, read anew.

A model knows positions 0..max_seq_len-1 only; when prompt and output fill them, generation stops
(finish reason "context") unless the caller asks to slide (``slide_context``). Sliding does what
nanoGPT's sampler does at every step: crop the sequence to its last ``max_seq_len`` tokens and run
the model on them from position 0, taking the last position's logits. A KV cache cannot be kept
across a crop (every kept token moves to a new position, and with learned or sinusoidal positions
its keys change), so each token past the context costs one prefill of the window — the price of
correctness, and what nanoGPT pays at every step. The processors see the whole history, as before
the crop; the window is what the model reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nima.runtime.rows import FINISH_CONTEXT, Limits, Row, draws, presence, process_scores, sample_tokens
from nima.runtime.session import DecoderSession
from nima.spec.generation import GenerationSpec


def slide_on(
    session: DecoderSession,
    row: Row,
    options: GenerationSpec,
    limits: Limits,
    rng: np.random.Generator,
    greedy: bool,
) -> Iterator[int]:
    """Extend ``row``, which stopped at the context, one token per window prefill until it finishes
    another way (end token, stop string, max_new_tokens); yield each token."""
    window = limits.context
    penalise = options.repetition_penalty != 1.0
    positions = np.arange(window, dtype=np.int64)[None]  # (1, W)
    mask = np.ones((1, window), dtype=np.int64)  # (1, W)
    while row.finish_reason == FINISH_CONTEXT:
        ids = np.array([row.history[-window:]], dtype=np.int64)  # (1, W)
        logits, _ = session.step(ids, mask, positions, session.empty_cache(1, None, window))  # (1, V)
        seen = presence([row.history], logits.shape[-1]) if penalise else None
        process_scores(logits, [row], seen, options, limits.eos_ids)
        token = (
            int(logits[0].argmax()) if greedy else int(sample_tokens(logits, options, draws(rng), limits.eos_ids)[0])
        )
        row.tokens.append(token)
        row.finish_reason = limits.finish_reason(row)
        yield token
