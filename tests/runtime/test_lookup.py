"""Prompt-lookup decoding gives greedy decoding's tokens, in fewer runs of the model where the text repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_support import Counting

from nima.builders.models import DecoderLM
from nima.runtime import GenerateError, Generator
from nima.runtime.lookup import draft

RNG = np.random.default_rng(5)


def brute_draft(history: list[int], k: int) -> list[int]:
    for n in range(min(3, len(history) - 1), 0, -1):
        tail = history[-n:]
        starts = [s for s in range(len(history) - n) if history[s : s + n] == tail]
        if starts:
            return history[starts[-1] + n : starts[-1] + n + k]
    return []


def test_draft_by_brute_force() -> None:
    for _ in range(500):
        history = RNG.integers(0, 5, RNG.integers(1, 20)).tolist()
        k = int(RNG.integers(1, 6))
        assert draft(history, k) == brute_draft(history, k), (history, k)


def prompts(vocab: int) -> list[list[int]]:
    loops = [([7, 8, 9, 10] * 6)[:21], [3, 3, 3, 3, 3], ([11, 2, 40] * 9)[:25]]
    return loops + [RNG.integers(0, vocab, n).tolist() for n in (1, 4, 17, 60)]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "alibi", "ort"])
def test_lookup_gives_the_greedy_tokens(
    kind: str, bundles: dict[str, tuple[Path, DecoderLM]], ort_bundle: Path
) -> None:
    path = ort_bundle if kind == "ort" else bundles[kind][0]
    generator = Generator(path)
    counting = Counting(generator)
    runs = tokens = 0
    for prompt in prompts(generator.spec.vocab_size):
        for new in (1, 5, 60):
            plain = generator.generate([prompt], max_new_tokens=new, do_sample=False)[0].completions[0]
            before = counting.runs
            got = generator.generate([prompt], max_new_tokens=new, do_sample=False, prompt_lookup_num_tokens=4)
            spent = counting.runs - before
            assert (got[0].token_ids, got[0].completions[0].finish_reason) == (plain.token_ids, plain.finish_reason)
            streamed = list(
                generator.stream_tokens(prompt, max_new_tokens=new, do_sample=False, prompt_lookup_num_tokens=3)
            )
            assert streamed == plain.token_ids
            if new == 60:
                runs += spent
                tokens += len(plain.token_ids)
    # each run that accepts a draft yields two tokens or more; every rejected draft rolled the cache back
    assert runs < tokens, f"{runs} runs for {tokens} tokens: some drafts should have been accepted"


def test_lookup_runs_into_the_context_like_greedy(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    generator = Generator(bundles["llama"][0])
    prompt = ([1, 2, 3, 4] * 40)[:120]  # 8 positions left of the 128-token context
    plain = generator.generate([prompt], max_new_tokens=50, do_sample=False)[0].completions[0]
    got = generator.generate([prompt], max_new_tokens=50, do_sample=False, prompt_lookup_num_tokens=6)[0]
    assert (got.token_ids, got.completions[0].finish_reason) == (plain.token_ids, "context")


@pytest.mark.parametrize(
    "options, words",
    [
        ({"do_sample": True}, "greedy decoding only"),
        ({"num_beams": 2}, "greedy decoding only"),
        ({"repetition_penalty": 1.2}, "penalties"),
        ({"min_new_tokens": 3}, "min_new_tokens"),
    ],
)
def test_lookup_refuses_what_it_cannot_check(
    options: dict, words: str, bundles: dict[str, tuple[Path, DecoderLM]]
) -> None:
    generator = Generator(bundles["gpt2"][0])
    with pytest.raises(GenerateError, match=words):
        generator.generate([[1, 2]], prompt_lookup_num_tokens=3, **options)


def test_the_cli_flag(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    import json

    from typer.testing import CliRunner

    from nima.cli import app

    path = str(bundles["gpt2"][0])
    args = ["generate", path, "--prompt-ids", "7,8,9,7,8", "--max-new-tokens", "30", "--greedy", "--json"]
    plain = CliRunner().invoke(app, args)
    fast = CliRunner().invoke(app, [*args, "--prompt-lookup", "4"])
    assert plain.exit_code == fast.exit_code == 0, fast.output
    assert (
        json.loads(fast.stdout)[0]["completions"][0]["token_ids"]
        == json.loads(plain.stdout)[0]["completions"][0]["token_ids"]
    )
    refused = CliRunner().invoke(app, [*args[:-2], "--prompt-lookup", "4", "--top-k", "5", "--sample"])
    assert refused.exit_code == 2 and "--prompt-lookup: greedy decoding only" in refused.output
