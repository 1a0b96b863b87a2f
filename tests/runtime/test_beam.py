"""Beam search: exact against exhaustive search when the beams hold everything, and equal to a plain
step-by-step reference beam search (full forward passes, Python lists) on longer runs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from runtime_support import make_bundle, make_spec, next_logprobs, take_rows_on_device

from nima.builders.models import DecoderLM
from nima.runtime import Generator

EOS = 0


@pytest.fixture(scope="module")
def six_token_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DecoderLM]:
    spec = make_spec("llama", name="rt-six", vocab_size=6)
    return make_bundle(spec, tmp_path_factory.mktemp("six"), seed=3)


def exhaustive_best(model: DecoderLM, prompt: list[int], vocab: int, length: int, penalty: float) -> tuple[list, float]:
    """Score every sequence of at most ``length`` tokens (EOS only last) and return the best."""
    best: tuple[list[int], float] = ([], -np.inf)
    for n in range(1, length + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if EOS in seq[:-1] or (n < length and seq[-1] != EOS):
                continue  # shorter sequences exist only when they end in EOS
            total = sum(next_logprobs(model, prompt + list(seq[:i]))[seq[i]] for i in range(n))
            score = total / n**penalty
            if score > best[1]:
                best = (list(seq), score)
    return best


@pytest.mark.parametrize("penalty", [1.0, 0.0, 2.0])
def test_wide_beam_finds_the_exhaustive_best(six_token_bundle: tuple[Path, DecoderLM], penalty: float) -> None:
    path, model = six_token_bundle
    prompts = [[1, 2, 3], [4]]
    results = Generator(path).generate(
        prompts, num_beams=6**3, max_new_tokens=3, eos_token_ids=[EOS], length_penalty=penalty
    )
    for prompt, result in zip(prompts, results, strict=True):
        tokens, score = exhaustive_best(model, prompt, 6, 3, penalty)
        assert result.token_ids == tokens
        assert result.completions[0].score == pytest.approx(score, abs=1e-4)


def reference_beam_search(
    logprobs_of: Callable[[list[int]], np.ndarray],
    prompt: list[int],
    beams: int,
    max_new: int,
    eos: set[int],
    penalty: float,
    early: bool | str,
) -> list[tuple[list[int], float]]:
    """The beam search the runtime documents (transformers' rules), written plainly: lists of
    (tokens, logprob sum). ``logprobs_of(history)`` gives log p(. | history) for ``history = prompt + tokens``."""
    live: list[tuple[list[int], float]] = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    width = max(2, 1 + len(eos)) * beams
    for step in range(1, max_new + 1):
        candidates = []
        for tokens, total in live:
            logprobs = logprobs_of(prompt + tokens)
            candidates += [(tokens + [v], total + float(logprobs[v])) for v in range(len(logprobs))]
        candidates.sort(key=lambda c: -c[1])
        if step == max_new:  # the length limit: the first `beams` candidates all finish
            done = sorted(done + [(t, s / step**penalty) for t, s in candidates[:beams]], key=lambda d: -d[1])
            return done[:beams]
        next_live = []
        for rank, (tokens, total) in enumerate(candidates[:width]):
            if tokens[-1] in eos:
                if rank < beams:
                    done.append((tokens, total / step**penalty))
            elif len(next_live) < beams:
                next_live.append((tokens, total))
        done = sorted(done, key=lambda d: -d[1])[:beams]
        live = next_live
        if len(done) == beams:
            best_live = max(total for _, total in live)
            horizon = max_new if early == "never" and penalty > 0 else step
            if early is True or best_live / horizon**penalty <= done[-1][1]:
                break
    return done


@pytest.mark.parametrize(
    ("beams", "penalty", "early"), [(3, 1.0, False), (4, 0.6, True), (2, 1.5, False), (2, 1.5, "never")]
)
def test_beam_equals_reference_beam_search(
    bundles: dict[str, tuple[Path, DecoderLM]], beams: int, penalty: float, early: bool | str
) -> None:
    path, model = bundles["llama"]
    eos = set(range(16))  # a quarter of the vocabulary ends a sequence, so hypotheses finish along the way
    prompts = [[9, 30, 12, 7], [50, 2]]
    results = Generator(path).generate(
        prompts,
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=16,
        eos_token_ids=sorted(eos),
        length_penalty=penalty,
        early_stopping=early,
    )
    finished_early = 0
    for prompt, result in zip(prompts, results, strict=True):
        expected = reference_beam_search(partial(next_logprobs, model), prompt, beams, 16, eos, penalty, early)
        assert [c.token_ids for c in result.completions] == [tokens for tokens, _ in expected]
        for completion, (_, score) in zip(result.completions, expected, strict=True):
            assert completion.score == pytest.approx(score, abs=1e-4)
        finished_early += sum(c.finish_reason == "eos" for c in result.completions)
    assert finished_early, "some hypotheses should end in EOS, or the finishing rules go untested"
    if early is True:  # the flag must matter here, or matching the reference would not show it is honoured
        search = partial(reference_beam_search, partial(next_logprobs, model))
        other = [search(prompt, beams, 16, eos, penalty, False) for prompt in prompts]
        assert [[c.token_ids for c in r.completions] for r in results] != [[t for t, _ in o] for o in other]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_beam_with_rows_taken_on_the_device(bundles: dict[str, tuple[Path, DecoderLM]], family: str) -> None:
    """On a GPU the cache rows are gathered by a one-node ORT graph (`DeviceRows`), not by numpy:
    that path, run here on the CPU provider, gives the reference's beams too."""
    path, model = bundles[family]
    gen = Generator(path)
    rows = take_rows_on_device(gen)
    eos = set(range(16))
    prompts = [[9, 30, 12, 7], [50, 2]]
    results = gen.generate(prompts, num_beams=3, num_return_sequences=3, max_new_tokens=12, eos_token_ids=sorted(eos))
    for prompt, result in zip(prompts, results, strict=True):
        expected = reference_beam_search(partial(next_logprobs, model), prompt, 3, 12, eos, 1.0, False)
        assert [c.token_ids for c in result.completions] == [tokens for tokens, _ in expected]
    assert rows.calls >= 2 * 2 * gen.spec.n_layers  # the beams' expansion and at least one reordering


def test_beam_rows_are_independent_of_the_batch(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["gpt2"]
    gen = Generator(path)
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9]]
    together = gen.generate(prompts, num_beams=3, max_new_tokens=10, eos_token_ids=[0, 1])
    for prompt, result in zip(prompts, together, strict=True):
        alone = gen.generate([prompt], num_beams=3, max_new_tokens=10, eos_token_ids=[0, 1])[0]
        assert result.token_ids == alone.token_ids
