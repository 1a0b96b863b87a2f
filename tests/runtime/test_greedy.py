"""Greedy decoding from the ONNX bundle equals a PyTorch loop on the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_support import FAMILIES, torch_greedy

from nima.builders.models import DecoderLM
from nima.runtime import Generator

PROMPTS = [[5, 9, 2, 33, 17, 8, 40], [11], [3, 60, 22, 22]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_equals_pytorch_for_64_tokens(family: str, bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles[family]
    result = Generator(path).generate([PROMPTS[0]], max_new_tokens=80, do_sample=False)[0]
    expected = torch_greedy(model, PROMPTS[0], 80)
    assert result.token_ids == expected
    assert result.completions[0].finish_reason == "length"
    assert len(set(expected)) > 5, "a degenerate reference would make the comparison weak"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_padded_batch_equals_one_by_one(family: str, bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles[family]
    gen = Generator(path)
    batch = gen.generate(PROMPTS, max_new_tokens=24, do_sample=False)
    for prompt, result in zip(PROMPTS, batch, strict=True):
        alone = gen.generate([prompt], max_new_tokens=24, do_sample=False)[0]
        assert result.token_ids == alone.token_ids == torch_greedy(model, prompt, 24)
        assert result.prompt_ids == prompt


def test_rows_finish_separately(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles["llama"]
    # the EOS of each row is a token its greedy path produces at a different step
    paths = [torch_greedy(model, prompt, 20) for prompt in PROMPTS]
    eos = paths[0][4]
    results = Generator(path).generate(PROMPTS, max_new_tokens=20, do_sample=False, eos_token_ids=[eos])
    for expected, result in zip(paths, results, strict=True):
        cut = expected.index(eos) + 1 if eos in expected else len(expected)
        assert result.token_ids == expected[:cut]
        assert result.completions[0].finish_reason == ("eos" if eos in expected else "length")


def test_context_limit_stops_generation(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["gpt2"]  # learned positions: the context is a hard limit
    prompt = list(np.arange(120) % 64)
    result = Generator(path).generate([prompt], max_new_tokens=50, do_sample=False)[0]
    assert len(result.token_ids) == 128 - 120
    assert result.completions[0].finish_reason == "context"  # the context ran out before max_new_tokens
    exact = Generator(path).generate([prompt], max_new_tokens=8, do_sample=False)[0]
    assert exact.completions[0].finish_reason == "length"  # both at once: what was asked for was given
    beams = Generator(path).generate([prompt], max_new_tokens=50, num_beams=2, num_return_sequences=2)[0]
    assert {c.finish_reason for c in beams.completions} <= {"context", "eos"}
    assert "context" in {c.finish_reason for c in beams.completions}
    generator = Generator(path)
    stream = generator.stream_tokens(prompt, max_new_tokens=50, do_sample=False)
    streamed: list[int] = []
    while True:
        try:
            streamed.append(next(stream))
        except StopIteration as done:  # the generator returns the finish reason
            assert (streamed, done.value) == (result.token_ids, "context")
            break


def test_repetition_penalty_equals_formula(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles["gpt2"]
    got = Generator(path).generate([PROMPTS[0]], max_new_tokens=32, do_sample=False, repetition_penalty=1.7)[0]
    assert got.token_ids == torch_greedy(model, PROMPTS[0], 32, repetition_penalty=1.7)
    plain = torch_greedy(model, PROMPTS[0], 32)
    assert got.token_ids != plain, "the penalty should change this run"


def test_presence_and_frequency_penalties_equal_formula(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles["gpt2"]
    options = {"presence_penalty": 0.8, "frequency_penalty": 0.6}
    got = Generator(path).generate([PROMPTS[0]], max_new_tokens=32, do_sample=False, **options)[0]
    assert got.token_ids == torch_greedy(model, PROMPTS[0], 32, **options)
    assert got.token_ids != torch_greedy(model, PROMPTS[0], 32), "the penalties should change this run"


def test_no_repeat_ngram_never_repeats(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles["alibi"]
    plain = torch_greedy(model, PROMPTS[2], 40)
    history = PROMPTS[2] + plain
    assert len({tuple(history[i : i + 2]) for i in range(len(history) - 1)}) < len(history) - 1, "needs repeats"
    got = Generator(path).generate([PROMPTS[2]], max_new_tokens=40, do_sample=False, no_repeat_ngram_size=2)[0]
    history = PROMPTS[2] + got.token_ids
    bigrams = [tuple(history[i : i + 2]) for i in range(len(history) - 1)]
    assert len(bigrams) == len(set(bigrams))


def test_min_new_tokens_holds_eos_back(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["llama"]
    eos = list(range(32))  # half the vocabulary ends a sequence: without the minimum it stops at once
    gen = Generator(path)
    early = gen.generate([PROMPTS[0]], max_new_tokens=30, do_sample=False, eos_token_ids=eos)[0]
    held = gen.generate([PROMPTS[0]], max_new_tokens=30, do_sample=False, eos_token_ids=eos, min_new_tokens=6)[0]
    assert len(early.token_ids) < 6
    assert len(held.token_ids) >= 6
    assert all(t not in eos for t in held.token_ids[:5])


def test_interleaved_streams_on_one_generator(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """Two streams of a portable bundle advanced in turn: each row's stepper keeps its own inputs
    and cache, so each gives what it gives alone."""
    path, model = bundles["gpt2"]
    gen = Generator(path)
    assert type(gen.session.row_stepper(gen.session.empty_cache(1))).__name__ == "HostRowStepper"
    streams = [gen.stream_tokens(p, max_new_tokens=16, do_sample=False) for p in (PROMPTS[0], PROMPTS[2])]
    got: list[list[int]] = [[], []]
    for _ in range(16):
        for tokens, stream in zip(got, streams, strict=True):
            tokens.append(next(stream))
    assert got == [torch_greedy(model, PROMPTS[0], 16), torch_greedy(model, PROMPTS[2], 16)]
