"""The next token of every row of a batch, each row under its own options, random stream and log-probabilities.

A served batch mixes requests: one row greedy, the next sampled at temperature 0.7 with top-p 0.9,
the next with a repetition penalty. Each row is processed exactly as `nima.runtime.search` processes
a row decoded alone — the same processors, the same warpers, the uniform draws of a sampled token
from the row's own generator — so a row gives the tokens it gives alone. A row may also carry a
logit bias (OpenAI's ``logit_bias``: numbers added to chosen tokens' scores before anything else, the
reported log-probabilities excepted, which stay the model's own). What a batch adds is grouping:
rows under the same warpers are warped as one (G, V) array, greedy rows take one argmax, and rows
without score processors skip them; the per-row Python left is a handful of operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nima.runtime.grammar import RowGrammar
from nima.runtime.options import is_greedy
from nima.runtime.processors import log_softmax
from nima.runtime.rows import Row, presence, process_scores, sample_tokens, scores_changed
from nima.spec.generation import GenerationSpec


@dataclass(frozen=True)
class LogitBias:
    """Numbers added to some tokens' scores: ``ids`` (K,) int64, distinct, within the vocabulary;
    ``values`` (K,) float32."""

    ids: np.ndarray
    values: np.ndarray


@dataclass
class RowPlan:
    """How one row chooses: its options, end ids, random stream (None: greedy), how many top
    log-probabilities it reports (None: none; 0: the chosen token's only) and its logit bias."""

    options: GenerationSpec
    eos_ids: tuple[int, ...]
    rng: np.random.Generator | None
    logprobs: int | None = None
    bias: LogitBias | None = None
    grammar: RowGrammar | None = None  # the response format the row follows: what it may choose next
    greedy: bool = field(init=False)
    scored: bool = field(init=False)
    warp_key: tuple[float, int, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.greedy = is_greedy(self.options)
        self.scored = scores_changed(self.options)
        opts = self.options
        self.warp_key = (opts.temperature, opts.top_k, opts.top_p, opts.min_p)


@dataclass(frozen=True)
class Choice:
    """A chosen token, its log-probability under the model and the row's top alternatives (id, logprob)."""

    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


def choose(logits: np.ndarray, rows: Sequence[Row], plans: Sequence[RowPlan]) -> list[Choice]:
    """One token per row from ``logits`` (B, V), changed in place; see the module docstring."""
    reported = _logprobs(logits, plans)  # from the model's own scores, before any processor
    for b, (row, plan) in enumerate(zip(rows, plans, strict=True)):
        if plan.bias is not None:
            logits[b, plan.bias.ids] += plan.bias.values  # ids are distinct: one addition each
        if plan.grammar is not None:
            plan.grammar.forbid(logits[b])
        if plan.scored:
            seen = presence([row.history], logits.shape[-1]) if plan.options.repetition_penalty != 1.0 else None
            process_scores(logits[b : b + 1], [row], seen, plan.options, plan.eos_ids)  # in place, a (1, V) view
    tokens = np.zeros(len(plans), dtype=np.int64)
    greedy = [b for b, plan in enumerate(plans) if plan.greedy]
    if len(greedy) == len(plans):
        tokens = logits.argmax(axis=-1)  # (B,): no (G, V) copy of the rows first
    elif greedy:
        tokens[greedy] = logits[greedy].argmax(axis=-1)
    groups: dict[tuple[tuple[float, int, float, float], tuple[int, ...]], list[int]] = {}
    for b, plan in enumerate(plans):
        if not plan.greedy:  # by warpers, and by the end token a row with every token banned takes
            groups.setdefault((plan.warp_key, plan.eos_ids[:1]), []).append(b)
    for members in groups.values():
        streams = [plans[b].rng for b in members]  # each row draws from its own stream, as alone

        def draw(rows: np.ndarray, streams: list = streams) -> np.ndarray:
            return np.array([1.0 - streams[r].random() for r in rows])

        first = plans[members[0]]
        tokens[members] = sample_tokens(logits[members], first.options, draw, first.eos_ids)  # a (G, V) copy
    chosen = []
    for b, token in enumerate(tokens.tolist()):
        lp = reported.get(b)
        if lp is None:
            chosen.append(Choice(token))
            continue
        k = plans[b].logprobs or 0
        top = np.argpartition(-lp, min(k, len(lp) - 1))[:k] if k else np.zeros(0, dtype=np.int64)
        top = top[np.argsort(-lp[top], kind="stable")]
        chosen.append(Choice(token, float(lp[token]), tuple((int(t), float(lp[t])) for t in top)))
    return chosen


def _logprobs(logits: np.ndarray, plans: Sequence[RowPlan]) -> dict[int, np.ndarray]:
    """Row -> log-softmax of its logits (V,), for the rows that report log-probabilities."""
    wanted = [b for b, plan in enumerate(plans) if plan.logprobs is not None]
    if not wanted:
        return {}
    values = log_softmax(logits[wanted])  # (W, V) float64
    return dict(zip(wanted, values, strict=True))
