"""Continuous batching against generation alone: rows that join a running batch at different steps, with
different prompt lengths and options, give the tokens `Generator.generate` gives each of them alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nima.runtime import Generator
from nima.serve.jobs import Done, Failed, Job, Token
from nima.serve.scheduler import Scheduler

RNG = np.random.default_rng(11)
# (arrival step, prompt length, overrides): lengths both shorter and longer than the batch's span when they
# join, so rows move both ways; each row's own options and seed.
ARRIVALS: list[tuple[int, int, dict[str, Any]]] = [
    (0, 5, {"max_new_tokens": 30, "do_sample": False}),
    (0, 17, {"max_new_tokens": 12, "do_sample": True, "seed": 3, "top_k": 10}),
    (2, 3, {"max_new_tokens": 25, "do_sample": True, "seed": 4, "temperature": 0.7, "top_p": 0.9}),
    (4, 40, {"max_new_tokens": 20, "do_sample": False, "repetition_penalty": 1.4}),
    (5, 2, {"max_new_tokens": 40, "do_sample": False, "presence_penalty": 1.0, "frequency_penalty": 0.5}),
    (9, 60, {"max_new_tokens": 30, "do_sample": True, "seed": 9, "min_p": 0.05}),
    (12, 8, {"max_new_tokens": 10, "do_sample": False, "min_new_tokens": 6, "eos_token_ids": [1, 2, 3]}),
    (20, 9, {"max_new_tokens": 33, "do_sample": True, "seed": 1, "no_repeat_ngram_size": 2}),
    (26, 70, {"max_new_tokens": 50, "do_sample": False}),  # joins as others leave; runs into the context
]


def serve_staggered(scheduler: Scheduler, arrivals: list[tuple[int, list[int], dict[str, Any]]]) -> list[dict]:
    """Drive ``scheduler``'s loop by hand, submitting each job at its step; each job's tokens and reasons."""
    results: list[dict[str, Any]] = [{"tokens": {}, "done": {}} for _ in arrivals]
    sizes = []

    def emitter(n: int):
        def emit(event: Token | Done | Failed) -> None:
            if isinstance(event, Token):
                results[n]["tokens"].setdefault(event.index, []).append(event.choice.token)
            elif isinstance(event, Done):
                results[n]["done"][event.index] = event.finish_reason
            else:
                raise AssertionError(event.message)

        return emit

    step = 0
    pending = sorted(range(len(arrivals)), key=lambda n: arrivals[n][0])
    generator = scheduler.generator
    while pending or scheduler.running or scheduler.waiting:
        while pending and arrivals[pending[0]][0] <= step:
            n = pending.pop(0)
            _, ids, overrides = arrivals[n]
            options = generator.options(**overrides)
            scheduler.submit(Job(ids, options, overrides, emitter(n)))
        scheduler._admit()
        sizes.append(scheduler.batch.size)
        if scheduler.running:
            scheduler._step()
        step += 1
    assert max(sizes) > 1, "the test should have batched rows"
    return results


@pytest.mark.parametrize("kind", ["gpt2", "llama-ort", "llama3-ort", "alibi", "mistral-ort"])
def test_rows_joining_a_running_batch_give_what_they_give_alone(kind: str, bundles: dict[str, Path]) -> None:
    generator = Generator(bundles[kind])
    vocab = generator.spec.vocab_size
    arrivals = [(at, RNG.integers(4, vocab, size).tolist(), options) for at, size, options in ARRIVALS]
    served = serve_staggered(Scheduler(generator, max_batch=6, max_queue=100), arrivals)
    reasons = set()
    for (_, ids, overrides), got in zip(arrivals, served, strict=True):
        alone = generator.generate([ids], **overrides)[0].completions[0]
        assert got["tokens"][0] == alone.token_ids, overrides
        assert got["done"][0] == alone.finish_reason
        reasons.add(alone.finish_reason)
    assert {"length", "context"} <= reasons


def test_encoder_decoder_rows_join_with_their_sources(bundles: dict[str, Path]) -> None:
    generator = Generator(bundles["t5"])
    sources = [(0, 7, {}), (1, 3, {}), (3, 12, {"do_sample": True, "seed": 2}), (4, 1, {}), (8, 20, {})]
    arrivals = [
        (at, RNG.integers(4, 40, size).tolist(), {"max_new_tokens": 20, "do_sample": False, **options})
        for at, size, options in sources
    ]
    served = serve_staggered(Scheduler(generator, max_batch=8, max_queue=100), arrivals)
    for (_, ids, overrides), got in zip(arrivals, served, strict=True):
        alone = generator.generate(sources=[ids], **overrides)[0].completions[0]
        assert (got["tokens"][0], got["done"][0]) == (alone.token_ids, alone.finish_reason)


def test_several_completions_are_each_reproducible(bundles: dict[str, Path]) -> None:
    """``n`` completions share a prefill and differ; served again, with other rows around, they repeat."""
    generator = Generator(bundles["llama-ort"])
    options = {"max_new_tokens": 15, "do_sample": True, "seed": 5, "num_return_sequences": 3}
    alone = serve_staggered(Scheduler(generator, 8, 10), [(0, [5, 6, 7], options)] * 2)[0]["tokens"]
    crowd = [(0, [9, 9, 30, 4], {"max_new_tokens": 30, "do_sample": False}), (3, [5, 6, 7], options)]
    served = serve_staggered(Scheduler(generator, 8, 10), crowd)[1]["tokens"]
    assert served == alone
    assert len({tuple(tokens) for tokens in alone.values()}) == 3
    first = generator.generate([[5, 6, 7]], **{**options, "num_return_sequences": 1})[0].token_ids
    assert alone[0] == first, "the first completion's stream is the seed's own"


def test_a_full_batch_admits_waiting_rows_as_rows_leave(bundles: dict[str, Path]) -> None:
    generator = Generator(bundles["gpt2"])
    arrivals = [(0, [4 + i, 5, 6], {"max_new_tokens": 5 + 3 * i, "do_sample": False}) for i in range(7)]
    scheduler = Scheduler(generator, max_batch=3, max_queue=10)
    served = serve_staggered(scheduler, arrivals)
    for (_, ids, overrides), got in zip(arrivals, served, strict=True):
        assert got["tokens"][0] == generator.generate([ids], **overrides)[0].token_ids
    assert scheduler.metrics.batch_size._sum.get() <= 3 * scheduler.steps


def test_a_cancelled_job_leaves_before_the_next_step(bundles: dict[str, Path]) -> None:
    generator = Generator(bundles["llama-ort"])
    scheduler = Scheduler(generator, max_batch=4, max_queue=4)
    seen: dict[int, list[int]] = {0: [], 1: []}

    def emit(n: int):
        return lambda event: seen[n].append(event.choice.token) if isinstance(event, Token) else None

    jobs = [Job([5, 6, 7], generator.options(max_new_tokens=40, do_sample=False), {}, emit(n)) for n in (0, 1)]
    for job in jobs:
        scheduler.submit(job)
    scheduler._admit()
    scheduler._step()
    assert scheduler.batch.size == 2 and len(seen[0]) == 2
    jobs[0].cancelled.set()
    scheduler._step()
    assert scheduler.batch.size == 1 and len(seen[0]) == 2 and len(seen[1]) == 3
    assert scheduler.metrics.cancelled_rows._value.get() == 1


def test_prefills_between_steps_keep_to_the_budget(bundles: dict[str, Path]) -> None:
    """With rows running, the prompts prefilled before a step stop once they hold ``prefill_budget``
    tokens (the first always goes in); with none running, every waiting job that fits goes in."""
    generator = Generator(bundles["llama-ort"])
    scheduler = Scheduler(generator, max_batch=16, max_queue=16, prefill_budget=20)
    options = generator.options(max_new_tokens=12, do_sample=False)
    prompts = [[5 + i] * 10 for i in range(7)]
    for ids in prompts[:3]:
        scheduler.submit(Job(ids, options, {}, lambda event: None))
    scheduler._admit()
    assert len(scheduler.running) == 3, "nothing was running: no budget applies"
    for ids in prompts[3:]:
        scheduler.submit(Job(ids, options, {}, lambda event: None))
    admitted = []
    while scheduler.waiting:
        before = len(scheduler.running)
        scheduler._step()
        scheduler._admit()
        admitted.append(len(scheduler.running) - before)
    assert admitted == [2, 2], "10 + 10 tokens fill the budget of 20"
    long = Job([9] * 50, options, {}, lambda event: None)
    scheduler.submit(long)
    scheduler._step()
    scheduler._admit()
    assert scheduler.running[-1].job is long, "a prompt longer than the budget still goes in, alone"


def test_a_beam_job_searches_beside_the_running_batch(bundles: dict[str, Path]) -> None:
    """A beam job takes one model step after each batch step: the running rows keep getting tokens
    while it searches, and both give what they give alone."""
    generator = Generator(bundles["llama-ort"])
    scheduler = Scheduler(generator, max_batch=4, max_queue=4)
    tokens: dict[str, list[int]] = {"row": [], "beams": []}
    done: dict[str, tuple[int, ...] | None] = {}

    def emit(name: str):
        def on(event: Token | Done | Failed) -> None:
            assert not isinstance(event, Failed), event
            if isinstance(event, Token) and event.index == 0:
                tokens[name].append(event.choice.token)
            elif isinstance(event, Done) and event.index == 0:
                done[name] = event.tokens

        return on

    row = {"max_new_tokens": 40, "do_sample": False}
    beams = {"max_new_tokens": 12, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    scheduler.submit(Job([5, 6, 7], generator.options(**row), row, emit("row")))
    scheduler._admit()
    scheduler._step()
    scheduler.submit(Job([9, 4, 30, 2], generator.options(**beams), beams, emit("beams")))
    during = []
    while scheduler.running or scheduler.beams or scheduler.waiting:
        scheduler._admit()
        if scheduler.running:
            scheduler._step()
        if scheduler.beams:
            during.append(len(tokens["row"]))
        scheduler._advance_beams()
    assert len(set(during)) > 5, "the row got tokens while the beams searched"
    assert tokens["row"] == generator.generate([[5, 6, 7]], **row)[0].token_ids
    alone = generator.generate([[9, 4, 30, 2]], **beams)[0].completions[0].token_ids
    assert tokens["beams"] == alone and done["beams"] == tuple(alone)
