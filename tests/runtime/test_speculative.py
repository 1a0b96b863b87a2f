"""Speculative decoding with a draft bundle: greedy tokens identical to plain greedy decoding, sampled tokens
distributed as sampling from the target alone (a chi-square test against the exact distribution from the
PyTorch model) and reproduced by their seed, both caches rolled back after rejected drafts, on both cache
layouts."""

from __future__ import annotations

import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_support import Counting, next_logprobs

from nima.builders.models import DecoderLM
from nima.runtime import GenerateError, Generator, speculative
from nima.runtime.rows import Row

RNG = np.random.default_rng(11)


@pytest.mark.parametrize(
    ("target", "draft"), [("llama", "gpt2"), ("llama", "itself"), ("ort", "gpt2"), ("ort", "itself"), ("llama", "ort")]
)
def test_greedy_tokens_are_plain_greedy(target: str, draft: str, bundles: dict, ort_bundle: Path) -> None:
    """A draft that disagrees (another model) and one that always agrees (the target's own bundle): the same
    tokens as greedy decoding without a draft, incl. at the context limit; the agreeing draft takes fewer
    target runs than tokens. Rejected drafts roll back both caches: the target's or the draft's a shared
    buffer (``ort``) or not."""
    paths = {"ort": ort_bundle, **{name: path for name, (path, _) in bundles.items()}}
    path = paths[target]
    plain = Generator(path)
    drafted = Generator(path, draft=path if draft == "itself" else paths[draft])
    counting = Counting(drafted)
    context = plain.spec.max_seq_len
    for prompt in ([5, 6, 7], RNG.integers(0, 64, 17).tolist(), RNG.integers(0, 64, context - 6).tolist()):
        for new in (1, 4, 40):
            want = plain.generate([prompt], max_new_tokens=new, do_sample=False)[0].completions[0]
            before = counting.runs
            got = drafted.generate([prompt], max_new_tokens=new, do_sample=False, num_assistant_tokens=4)
            assert got[0].token_ids == want.token_ids, (prompt, new)
            assert got[0].completions[0].finish_reason == want.finish_reason
            if draft == "itself" and new == 40 and len(prompt) < 20:
                assert counting.runs - before < len(want.token_ids) / 2  # four drafted tokens kept per run, mostly
    streamed = list(drafted.stream_tokens([1, 2, 3], max_new_tokens=30, do_sample=False))
    assert streamed == plain.generate([[1, 2, 3]], max_new_tokens=30, do_sample=False)[0].token_ids


SAMPLING = ({"temperature": 0.8}, {"temperature": 1.3, "top_p": 0.9}, {"top_k": 5}, {"min_p": 0.1, "top_p": 0.95})


@pytest.mark.parametrize("draft", ["gpt2", "itself"])
def test_seeded_sampling_with_a_draft_is_reproducible(
    draft: str, bundles: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seed gives the same tokens call after call and on a fresh generator, however the clock runs: where
    a row drafts decides its draws, so a seeded sampled row drafts by its tokens alone, never by timing
    (which the test turns to noise) nor by what the generator's earlier rows found. The target as its
    own draft keeps every drafted token, so it still drafts: fewer than half as many runs as tokens."""
    path = bundles["llama"][0]
    clock = np.random.default_rng(5)
    now = [0.0]

    def noisy() -> float:
        now[0] += float(clock.exponential(0.01))
        return now[0]

    monkeypatch.setattr(speculative, "time", types.SimpleNamespace(perf_counter=noisy))
    other = path if draft == "itself" else bundles[draft][0]
    drafted = Generator(path, draft=other)
    counting = Counting(drafted)
    for options in SAMPLING:
        for seed in (0, 1):
            call = {"do_sample": True, "seed": seed, "max_new_tokens": 40, "num_assistant_tokens": 4, **options}
            before = counting.runs
            first = drafted.generate([[5, 6, 7]], **call)[0].token_ids
            if draft == "itself":
                assert counting.runs - before < len(first) / 2, (options, seed)
            assert drafted.generate([[5, 6, 7]], **call)[0].token_ids == first, (options, seed)
            assert Generator(path, draft=other).generate([[5, 6, 7]], **call)[0].token_ids == first
    streamed = list(drafted.stream_tokens([5, 6, 7], do_sample=True, seed=1, max_new_tokens=40, top_k=5))
    assert streamed == drafted.generate([[5, 6, 7]], do_sample=True, seed=1, max_new_tokens=40, top_k=5)[0].token_ids


TOP_K, PROMPT, N = 6, [3, 14, 15, 9], 2500


def top_k_probs(logprobs: np.ndarray) -> np.ndarray:
    """softmax over the TOP_K largest log-probabilities (the others 0), float64."""
    keep = np.argsort(logprobs)[-TOP_K:]
    probs = np.zeros_like(logprobs)
    probs[keep] = np.exp(logprobs[keep] - logprobs[keep].max())
    return probs / probs.sum()


def exact_marginals(model: DecoderLM) -> tuple[np.ndarray, np.ndarray]:
    """The distributions of the 2nd and 3rd sampled tokens under top-k sampling from the target alone, summed
    over the earlier tokens with the PyTorch model's full forward passes."""
    first = top_k_probs(next_logprobs(model, PROMPT))
    second = np.zeros_like(first)
    third = np.zeros_like(first)
    for a in np.flatnonzero(first):
        after_a = top_k_probs(next_logprobs(model, [*PROMPT, int(a)]))
        second += first[a] * after_a
        for b in np.flatnonzero(after_a):
            third += first[a] * after_a[b] * top_k_probs(next_logprobs(model, [*PROMPT, int(a), int(b)]))
    return second, third


def chi_square_passes(counts: np.ndarray, probs: np.ndarray) -> bool:
    """Pearson's test at p = 0.001, bins with expected counts under 5 merged into one; the critical value by
    the Wilson-Hilferty approximation (no scipy here)."""
    expected = probs * counts.sum()
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    wanted = np.append(expected[~small], expected[small].sum())
    observed, wanted = observed[wanted > 0], wanted[wanted > 0]
    statistic = float(((observed - wanted) ** 2 / wanted).sum())
    df = len(wanted) - 1
    critical = df * (1 - 2 / (9 * df) + 3.09 * np.sqrt(2 / (9 * df))) ** 3
    return statistic < critical


def sampled_tokens(generator: Generator, seed: int) -> np.ndarray:
    """N draws of the first three tokens, (N, 3), with the draft proposing two per round."""
    opts = generator.options(do_sample=True, top_k=TOP_K, max_new_tokens=3, num_assistant_tokens=2)
    limits = generator._limits(opts)
    rng = np.random.default_rng(seed)
    assert generator.draft is not None
    draws = []
    for _ in range(N):
        row = Row(list(PROMPT))
        tokens = list(
            speculative.decode_speculative(
                generator.session, generator.draft.session, row, limits, opts, rng, 2, generator.draft.spec.max_seq_len
            )
        )
        draws.append(tokens)
    return np.array(draws)


@torch.no_grad()
def test_sampling_keeps_the_target_distribution(bundles: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2nd token (the round's first drafted position) and the 3rd (its second) follow the target's own
    distribution; a rule that keeps every drafted token fails the same test, so the test can fail."""
    monkeypatch.setattr(speculative, "PROBE", 0)  # draft from the 2nd token on (no single steps first)
    target_path, model = bundles["llama"]
    generator = Generator(target_path, draft=bundles["gpt2"][0])
    second, third = exact_marginals(model)
    draws = sampled_tokens(generator, seed=1)
    vocab = generator.spec.vocab_size
    assert chi_square_passes(np.bincount(draws[:, 1], minlength=vocab), second)
    assert chi_square_passes(np.bincount(draws[:, 2], minlength=vocab), third)

    def keep_every_draft(scores, guesses, guess_probs, choose):  # noqa: ANN001, ANN202 - the wrong rule
        yield from guesses
        yield choose.draw(choose.probs(scores)[len(guesses)])

    monkeypatch.setattr(speculative, "_verify", keep_every_draft)
    wrong = sampled_tokens(generator, seed=2)
    assert not chi_square_passes(np.bincount(wrong[:, 1], minlength=vocab), second)


def test_what_a_draft_cannot_do_is_refused(bundles: dict, tmp_path: Path) -> None:
    generator = Generator(bundles["llama"][0], draft=bundles["gpt2"][0])
    for options, message in (
        ({"num_beams": 2}, "one sequence at a time"),
        ({"repetition_penalty": 1.2}, "not with repetition"),
        ({"prompt_lookup_num_tokens": 3}, "prompt lookup"),
    ):
        with pytest.raises(GenerateError, match=message):
            generator.generate([[1, 2]], max_new_tokens=3, **options)


def test_a_draft_that_always_agrees_but_costs_more_than_it_saves_is_paused(
    bundles: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target as its own draft agrees on every token, so no round is ever rejected; made slow (50 ms a
    round, where a single step of these models takes well under 5 ms), drafting must still pause, which it
    can only decide once single steps were timed (`speculative.PROBE`). Without the probe it drafted every
    round; with it, rounds thin out as the pauses double. The tokens stay greedy decoding's."""
    path = bundles["llama"][0]
    generator = Generator(path, draft=path)
    rounds = []
    slow_draft = speculative._draft

    def timed_draft(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        rounds.append(1)
        time.sleep(0.05)
        return slow_draft(*args, **kwargs)

    monkeypatch.setattr(speculative, "_draft", timed_draft)
    want = Generator(path).generate([[5, 6, 7]], max_new_tokens=60, do_sample=False)[0].token_ids
    got = generator.generate([[5, 6, 7]], max_new_tokens=60, do_sample=False, num_assistant_tokens=4)[0].token_ids
    assert got == want
    assert len(rounds) <= 7, f"{len(rounds)} draft rounds for 60 tokens: drafting did not pause"
    rounds.clear()  # the generator remembers: its next row starts paused, as long as the last pause
    assert generator.generate([[5, 6, 8]], max_new_tokens=60, do_sample=False, num_assistant_tokens=4)[0].token_ids
    assert len(rounds) <= 2, f"{len(rounds)} draft rounds in a row after drafting was found not to pay"
    monkeypatch.setattr(speculative, "PROBE", 0)
    rounds.clear()
    Generator(path, draft=path).generate([[5, 6, 7]], max_new_tokens=60, do_sample=False, num_assistant_tokens=4)
    assert len(rounds) >= 11  # the test can fail: without single steps timed, every round drafts
