"""What the search loops share: rows of a batch, left padding, per-row stopping, score processing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from nima.runtime import processors
from nima.spec.generation import GenerationSpec

# Why a row ended: an end token, a stop string, max_new_tokens, or the model's context (max_seq_len)
# before max_new_tokens: a cut the caller did not ask for, so it has its own name.
FINISH_EOS, FINISH_STOP, FINISH_LENGTH, FINISH_CONTEXT = "eos", "stop", "length", "context"


@dataclass
class Row:
    """One sequence being generated: its prompt, the tokens so far and why it stopped (None: running)."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def history(self) -> list[int]:
        return self.prompt + self.tokens


@dataclass(frozen=True)
class Limits:
    """When a row stops: EOS ids, stop strings (via ``decode``), new-token and context limits.

    ``decode(before, tokens)``: the text ``tokens`` add after the tokens ``before`` (a prompt; see
    `nima.runtime.text.completion_text`)."""

    eos_ids: tuple[int, ...]
    max_new_tokens: int
    context: int
    stop_strings: tuple[str, ...] = ()
    decode: Callable[[Sequence[int], Sequence[int]], str] | None = None

    @cached_property
    def _stop_window(self) -> int:
        """Tokens whose text must hold any stop string that the newest token completes."""
        return max(len(stop.encode("utf-8")) for stop in self.stop_strings) + 4

    def capacity(self, prompt_lengths: Sequence[int]) -> int:
        """The most positions a batch of these prompts, left-padded to the longest, can fill.

        Every row gains one position per step, and a row stops after ``max_new_tokens`` or at the
        context; a shorter prompt can run on after the longest one has stopped.
        """
        steps = max(min(self.max_new_tokens, self.context - n) for n in prompt_lengths)
        return max(prompt_lengths) + max(steps, 1)

    def batches(self, prompt_lengths: Sequence[int]) -> list[list[int]]:
        """The rows (indices, in order) to decode together: all at once unless that needs more cache
        positions than the context holds.

        Left padding puts every row's new tokens after the longest prompt, so a short prompt
        that runs on for many steps in a batch with a long one can need cache positions past the
        context, which the ``ort`` graphs' rotary tables do not cover (and the context is what a
        bundle promises). Such a batch is split: rows sorted by prompt length are grouped while
        the group's `capacity` fits. Each row then generates what it generates alone.
        """
        everything = list(range(len(prompt_lengths)))
        if not everything or self.capacity(prompt_lengths) <= self.context:
            return [everything]
        groups: list[list[int]] = []
        for index in sorted(everything, key=lambda i: -prompt_lengths[i]):
            if groups and self.capacity([prompt_lengths[i] for i in (*groups[-1], index)]) <= self.context:
                groups[-1].append(index)
            else:
                groups.append([index])
        return [sorted(group) for group in groups]

    def finish_reason(self, row: Row) -> str | None:
        """Why ``row`` must stop after its last token, or None."""
        if row.tokens and row.tokens[-1] in self.eos_ids:
            return FINISH_EOS
        if self.stop_strings and self.decode is not None:
            # A stop string that was not in the text before this token ends inside it, so it lies
            # in the last few tokens: every token holds at least one byte, and the margin covers a
            # character split between tokens. Decoding only those keeps each step's cost flat
            # (decoding the whole row every step grows with the square of its length). While the
            # window holds the whole completion, it is decoded after the prompt, as the text is: a
            # SentencePiece completion's first word keeps its space, which a stop string may start with.
            whole = len(row.tokens) <= self._stop_window
            text = self.decode(row.prompt if whole else (), row.tokens[-self._stop_window :])
            if any(stop in text for stop in self.stop_strings):
                return FINISH_STOP
        if len(row.tokens) >= self.max_new_tokens:
            return FINISH_LENGTH
        if len(row.prompt) + len(row.tokens) >= self.context:
            return FINISH_CONTEXT
        return None


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, position_ids), each (B, longest), prompts aligned to the right."""
    longest = max(len(p) for p in prompts)
    ids = np.full((len(prompts), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, longest - len(prompt) :] = prompt
            mask[row, longest - len(prompt) :] = 1
    positions = np.clip(np.cumsum(mask, axis=-1) - 1, 0, None).astype(np.int64)
    return ids, mask, positions


def presence(histories: Sequence[Sequence[int]], vocab: int) -> np.ndarray:
    """(R, V) bool: which tokens each row already holds (for the repetition penalty)."""
    seen = np.zeros((len(histories), vocab), dtype=bool)
    for row, history in enumerate(histories):
        seen[row, list(history)] = True
    return seen


def process_scores(
    logits: np.ndarray, rows: Sequence[Row], seen: np.ndarray | None, options: GenerationSpec, eos_ids: Sequence[int]
) -> None:
    """The score-changing processors, in place: repetition penalty, presence/frequency penalties,
    no-repeat n-grams, minimum length, then forced first and last tokens (they override the others)."""
    if seen is not None:
        processors.repetition_penalty(logits, seen, options.repetition_penalty)
    if options.presence_penalty or options.frequency_penalty:
        generated = [row.tokens for row in rows]
        processors.occurrence_penalties(logits, generated, options.presence_penalty, options.frequency_penalty)
    if options.no_repeat_ngram_size:
        processors.no_repeat_ngrams(logits, [row.history for row in rows], options.no_repeat_ngram_size)
    if options.min_new_tokens:
        too_short = np.array([len(row.tokens) < options.min_new_tokens for row in rows])
        processors.ban_tokens(logits, too_short, eos_ids)
    if options.forced_bos_token_id is not None:  # transformers': where the history is one token (a decoder start)
        first = np.array([len(row.history) == 1 for row in rows])
        processors.force_tokens(logits, first, [options.forced_bos_token_id])
    if options.forced_eos_token_ids:  # the last token max_new_tokens allows
        last = np.array([len(row.tokens) == options.max_new_tokens - 1 for row in rows])
        processors.force_tokens(logits, last, options.forced_eos_token_ids)


def scores_changed(options: GenerationSpec) -> bool:
    """Whether `process_scores` changes anything under ``options`` (a loop may skip it)."""
    return (
        options.repetition_penalty != 1.0
        or bool(options.presence_penalty or options.frequency_penalty)
        or bool(options.no_repeat_ngram_size)
        or bool(options.min_new_tokens)
        or options.forced_bos_token_id is not None
        or bool(options.forced_eos_token_ids)
    )


def draws(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """`sample_tokens`' ``draw`` for rows sharing one random stream: uniforms in (0, 1], in row order."""
    return lambda rows: 1.0 - rng.random(len(rows))


def row_draws(rngs: Sequence[np.random.Generator]) -> Callable[[np.ndarray], np.ndarray]:
    """`sample_tokens`' ``draw`` for rows each with a stream of its own (``rngs[i]``: row i's)."""
    return lambda rows: np.array([1.0 - rngs[r].random() for r in rows])


def row_rngs(seed: int | None, completions: Sequence[int]) -> list[np.random.Generator]:
    """A random stream per row, row ``i`` being completion ``completions[i]`` of its prompt.

    With a seed, completion 0's stream is seeded with it and completion j's with ``(seed, j)``: a
    prompt gives the same tokens alone or in any batch, as each request does in `nima.serve` (which
    uses the same streams). Without one, every row draws fresh entropy of its own."""
    if seed is None:
        return [np.random.default_rng(child) for child in np.random.SeedSequence().spawn(len(completions))]
    return [np.random.default_rng(seed if j == 0 else (seed, j)) for j in completions]


def sample_tokens(
    logits: np.ndarray,
    options: GenerationSpec,
    draw: Callable[[np.ndarray], np.ndarray],
    ends: Sequence[int] = (),
) -> np.ndarray:
    """One token per row (R,) drawn from the distribution `warp` gives, without building it when top-p
    is on (`processors.sample_nucleus`); ``draw(rows)`` gives a uniform in (0, 1] per row index. In
    place on ``logits``.

    A row with nothing to draw from (every token banned: an n-gram ban over a small vocabulary, a
    grammar; or NaN scores from broken weights) takes its first end token from ``ends`` (token 0
    without one), so that it ends rather than draw forever (top-p's rejection loop found no token
    inside a nucleus of no mass) or draw a banned token; a row with an infinite score takes it."""
    top = logits.max(axis=-1)  # (R,) NaN where any score is NaN
    dead = ~np.isfinite(top)
    if dead.any():
        tokens = np.where(top == np.inf, logits.argmax(axis=-1), ends[0] if ends else 0).astype(np.int64)
        alive = np.flatnonzero(~dead)
        if len(alive):
            tokens[alive] = sample_tokens(logits[alive], options, lambda rows: draw(alive[rows]))
        return tokens
    _warp_logits(logits, options)
    probs = processors.exp_weights(logits)  # (R, V) the distribution times a per-row constant
    weights = probs
    if options.min_p > 0.0:
        weights = probs.copy()
        processors.min_p(weights, options.min_p)
    if options.top_p < 1.0:
        return processors.sample_nucleus(probs, weights, options.top_p, draw)
    return processors.sample_with(weights, draw(np.arange(len(weights))))


def warp(logits: np.ndarray, options: GenerationSpec) -> np.ndarray:
    """The sampling distribution, (R, V): temperature and top-k on the logits, softmax, then top-p and
    min-p on the probabilities, renormalised (what `sample_tokens` draws from)."""
    _warp_logits(logits, options)
    probs = processors.softmax(logits)  # (R, V)
    processors.top_p(probs, options.top_p)
    processors.min_p(probs, options.min_p)
    if options.top_p < 1.0 or options.min_p > 0.0:
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def _warp_logits(logits: np.ndarray, options: GenerationSpec) -> None:
    """The warpers that work on logits, in place: the temperature, then top-k."""
    processors.temperature(logits, options.temperature)
    processors.top_k(logits, options.top_k)
