"""Sampling: drawn tokens stay inside the allowed set, their frequencies match the renormalised
distribution (chi-square), and seeds reproduce. The allowed sets and distributions are computed
here by brute force from PyTorch's probabilities, not by the runtime's processors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from runtime_support import next_logprobs

from nima.builders.models import DecoderLM
from nima.runtime import Generator
from nima.runtime.processors import sample

PROMPT = [9, 30, 12, 7, 21]
DRAWS = 4000


def chi_square_critical(df: int, z: float = 3.29) -> float:
    """Upper chi-square quantile (Wilson-Hilferty; z = 3.29 is the 0.9995 normal quantile)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def expected_distribution(probs: np.ndarray, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> np.ndarray:
    """Renormalised target distribution, by sorting: top-k, then nucleus, then min-p (HF's order)."""
    keep = np.ones_like(probs, dtype=bool)
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    if top_k:
        keep[order[top_k:]] = False
    p = np.where(keep, probs, 0.0)
    p = p / p.sum()
    if top_p < 1.0:
        mass = 0.0
        for i in sorted(range(len(p)), key=lambda i: -p[i]):
            if mass >= top_p:
                keep[i] = False
            mass += p[i]
        p = np.where(keep, p, 0.0)
        p = p / p.sum()
    if min_p:
        keep &= p >= min_p * p.max()
        p = np.where(keep, p, 0.0)
        p = p / p.sum()
    return p


def first_tokens(path: Path, **options: object) -> np.ndarray:
    result = Generator(path).generate([PROMPT], max_new_tokens=1, do_sample=True, num_return_sequences=DRAWS, **options)
    return np.array([c.token_ids[0] for c in result[0].completions])


CASES = [
    {"top_k": 5},
    {"top_p": 0.7},
    {"min_p": 0.2},
    {"temperature": 0.7, "top_k": 12, "top_p": 0.9},
    {"temperature": 1.5},
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_sampled_first_tokens_follow_the_filtered_distribution(
    bundles: dict[str, tuple[Path, DecoderLM]], options: dict[str, float]
) -> None:
    path, model = bundles["llama"]
    temperature = options.get("temperature", 1.0)
    logits = next_logprobs(model, PROMPT) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    filters = {k: v for k, v in options.items() if k != "temperature"}
    target = expected_distribution(probs, **filters)  # type: ignore[arg-type]
    drawn = first_tokens(path, seed=1, **options)
    allowed = set(np.flatnonzero(target > 0).tolist())
    assert set(drawn.tolist()) <= allowed
    counts = np.bincount(drawn, minlength=len(target))
    # pool rare tokens into one cell so every expected count is at least 5
    expected = target * DRAWS
    common = expected >= 5
    cells_obs = [*counts[common], counts[~common & (target > 0)].sum()]
    cells_exp = [*expected[common], expected[~common & (target > 0)].sum()]
    if cells_exp[-1] < 5:
        cells_obs, cells_exp = (
            cells_obs[:-2] + [cells_obs[-2] + cells_obs[-1]],
            cells_exp[:-2] + [cells_exp[-2] + cells_exp[-1]],
        )
    stat = sum((o - e) ** 2 / e for o, e in zip(cells_obs, cells_exp, strict=True))
    df = len(cells_exp) - 1
    assert df >= 2, "the case should leave several tokens to choose from"
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} with {df} degrees of freedom"


@pytest.mark.parametrize("prompts", [[PROMPT, [4, 17], [2, 8, 33, 1, 40, 11, 6, 5]], [PROMPT]], ids=["batch", "one"])
@pytest.mark.parametrize("options", CASES[:4], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_sampled_token_of_a_padded_batch_is_allowed(
    bundles: dict[str, tuple[Path, DecoderLM]], options: dict[str, float], prompts: list[list[int]]
) -> None:
    """Not just the first token: at every cached step of every row of a left-padded batch, the token
    drawn is in the allowed set recomputed from a full PyTorch forward of that row's history. Also
    for one prompt alone, which after its prefill runs the single-row loop."""
    path, model = bundles["llama"]
    rows = Generator(path).generate(prompts, max_new_tokens=24, do_sample=True, seed=3, **options)
    temperature = options.get("temperature", 1.0)
    filters = {k: v for k, v in options.items() if k != "temperature"}
    for prompt, row in zip(prompts, rows, strict=True):
        assert len(row.token_ids) == 24
        for step, token in enumerate(row.token_ids):
            logits = next_logprobs(model, prompt + row.token_ids[:step]) / temperature
            probs = np.exp(logits - logits.max())
            allowed = expected_distribution(probs / probs.sum(), **filters) > 0  # type: ignore[arg-type]
            assert allowed[token], (prompt, step, token, int(allowed.sum()))


def test_the_chi_square_check_detects_a_wrong_distribution() -> None:
    # The same statistic rejects samples drawn from a distribution other than the target.
    rng = np.random.default_rng(0)
    target = np.array([0.4, 0.3, 0.2, 0.1])
    wrong = np.array([0.3, 0.3, 0.2, 0.2])
    drawn = sample(np.tile(wrong, (DRAWS, 1)), rng)
    counts = np.bincount(drawn, minlength=4)
    stat = float(((counts - target * DRAWS) ** 2 / (target * DRAWS)).sum())
    assert stat > chi_square_critical(3)


def test_sample_never_draws_zero_probability_tokens() -> None:
    rng = np.random.default_rng(0)
    probs = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]] * 5000)
    assert set(sample(probs, rng).tolist()) == {1, 3}


def test_same_seed_same_output(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["gpt2"]
    gen = Generator(path)
    runs = [gen.generate([PROMPT, [3]], max_new_tokens=20, do_sample=True, seed=s) for s in (5, 5, 6)]
    ids = [[r.token_ids for r in run] for run in runs]
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]


def test_a_seeded_prompt_samples_the_same_alone_or_in_any_batch(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """Each row draws from a stream of its own (completion j of a prompt: the seed, or (seed, j)), so a
    batch's rows, of any length and order, give what their prompts give alone; copies still differ."""
    path, _ = bundles["llama"]
    gen = Generator(path)
    options = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.3, "top_p": 0.95, "seed": 11}
    prompts = [PROMPT, [4, 17], [2, 8, 33, 1, 40, 11, 6, 5]]

    def ids(generations: list) -> list[list[list[int]]]:
        return [[c.token_ids for c in g.completions] for g in generations]

    alone = [ids(gen.generate([p], num_return_sequences=3, **options))[0] for p in prompts]
    assert ids(gen.generate(prompts[::-1], num_return_sequences=3, **options)[::-1]) == alone
    assert all(len({tuple(t) for t in copies}) == 3 for copies in alone)  # the copies draw apart
    streamed = list(gen.stream_tokens(prompts[1], **options))
    assert streamed == alone[1][0]


def test_temperature_zero_is_greedy(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["gpt2"]
    gen = Generator(path)
    sampled = gen.generate([PROMPT], max_new_tokens=12, do_sample=True, temperature=0.0, seed=1)[0]
    assert sampled.token_ids == gen.generate([PROMPT], max_new_tokens=12, do_sample=False)[0].token_ids


@pytest.mark.parametrize("temperature", [1e-300, 1e-40, 1e-20, 1e-6])
def test_a_tiny_temperature_samples_the_argmax(bundles: dict[str, tuple[Path, DecoderLM]], temperature: float) -> None:
    """Dividing float32 logits by 1e-40 used to overflow (every positive logit inf), and the draw was no longer
    the argmax's: a temperature near 0 must give greedy decoding's tokens, in a batch too."""
    path, _ = bundles["gpt2"]
    gen = Generator(path)
    prompts = [PROMPT, [4, 17], [2, 8, 33, 1]]
    greedy = [g.token_ids for g in gen.generate(prompts, max_new_tokens=12, do_sample=False)]
    for seed in (1, 2):
        sampled = gen.generate(prompts, max_new_tokens=12, do_sample=True, temperature=temperature, seed=seed)
        assert [g.token_ids for g in sampled] == greedy


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_row_with_every_token_banned_takes_its_end_token(top_p: float) -> None:
    """Every score -inf (an n-gram ban over a small vocabulary) or NaN (broken weights): the row takes its
    end token, where top-p's rejection loop ran for ever; a row with an infinite score takes that token;
    the other rows draw what they draw alone."""
    import warnings

    from nima.runtime.rows import sample_tokens
    from nima.spec.generation import GenerationSpec

    options = GenerationSpec(do_sample=True, temperature=0.7, top_p=top_p)
    live = np.random.default_rng(0).standard_normal((2, 50)).astype(np.float32)
    batch = np.full((5, 50), -np.inf, dtype=np.float32)
    batch[1], batch[3] = live
    batch[2] = np.nan
    batch[4, 17] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy warning about the dead rows
        tokens = sample_tokens(batch.copy(), options, lambda rows: np.full(len(rows), 0.5), ends=(7,))
    picked = [int(sample_tokens(live[[i]].copy(), options, lambda rows: np.full(len(rows), 0.5))[0]) for i in range(2)]
    assert tokens.tolist() == [7, picked[0], 7, picked[1], 17]
    assert sample_tokens(batch[:1].copy(), options, lambda rows: np.ones(len(rows))).tolist() == [0]  # no end token
