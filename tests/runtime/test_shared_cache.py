"""`--target ort` bundles of plain models run with one KV buffer as past and present
(`SharedBufferSession`), and generate what PyTorch's full forward passes choose."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from runtime_support import make_spec, next_logprobs, take_rows_on_device, torch_greedy
from test_beam import reference_beam_search

from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import Generator
from nima.runtime.errors import GenerateError
from nima.runtime.session import DecoderSession, KVCache
from nima.runtime.shared_cache import SharedBufferSession

PROMPTS = [[5, 9, 2, 33, 17, 8, 40], [11], [3, 60, 22, 22]]
WIDE = {"d_model": 64, "attention": {"n_heads": 4, "n_kv_heads": 2}}  # head size 16: the kernel's minimum


@pytest.fixture(scope="module")
def ort_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, DecoderLM]]:
    """LLaMA-style (rotary in the kernel) and GPT-2-style (learned positions) `ort` bundles, vocabulary 64."""
    root = tmp_path_factory.mktemp("ort-bundles")
    out = {}
    for seed, family in enumerate(("llama", "gpt2")):
        spec = make_spec(family, name=f"rt-ort-{family}", **WIDE)
        model = build_model(spec, seed=seed)
        source = save_build(model, spec, root / f"{family}-src")
        bundle = root / f"{family}-ort"
        export_bundle(source, bundle, target="ort", verify=False)
        out[family] = (bundle, model.eval())
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ort_bundle_shares_its_buffer_and_matches_pytorch(
    family: str, ort_bundles: dict[str, tuple[Path, DecoderLM]]
) -> None:
    path, model = ort_bundles[family]
    gen = Generator(path)
    assert gen.bundle.share_buffer and isinstance(gen.session, SharedBufferSession)
    result = gen.generate([PROMPTS[0]], max_new_tokens=70, do_sample=False)[0]
    expected = torch_greedy(model, PROMPTS[0], 70)
    assert result.token_ids == expected
    assert len(set(expected)) > 5, "a degenerate reference would make the comparison weak"


def test_padded_batch_with_rows_finishing_apart(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """Left padding, and rows leaving the batch (their buffers copied out) at different steps."""
    path, model = ort_bundles["llama"]
    paths = [torch_greedy(model, prompt, 24) for prompt in PROMPTS]
    eos = paths[0][5]
    results = Generator(path).generate(PROMPTS, max_new_tokens=24, do_sample=False, eos_token_ids=[eos])
    for expected, result in zip(paths, results, strict=True):
        cut = expected.index(eos) + 1 if eos in expected else len(expected)
        assert result.token_ids == expected[:cut]
    assert len({len(r.token_ids) for r in results}) > 1, "rows should finish at different steps"


@pytest.mark.parametrize("how", ["plain", "free-positions-nan", "rows-on-device"])
def test_beam_search_equals_reference(
    ort_bundles: dict[str, tuple[Path, DecoderLM]], how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beam reordering copies the filled positions of the selected rows; the kernel never reads the
    free ones, shown by filling them with NaN after every reordering. On a GPU whole buffers are
    gathered on the device (`DeviceRows`, here on the CPU provider)."""
    poisoned = how == "free-positions-nan"
    if poisoned:
        select = SharedBufferSession.select

        def poisoning_select(self: SharedBufferSession, cache: KVCache, rows: np.ndarray) -> KVCache:
            chosen = select(self, cache, rows)
            for value in chosen.values:
                value.numpy()[:, :, chosen.length :] = np.nan  # (B, H_kv, capacity, hd) past the cache
            return chosen

        monkeypatch.setattr(SharedBufferSession, "select", poisoning_select)
    path, model = ort_bundles["llama"]
    eos = set(range(16))
    prompts = [[9, 30, 12, 7], [50, 2]]
    gen = Generator(path)
    rows = take_rows_on_device(gen) if how == "rows-on-device" else None
    results = gen.generate(prompts, num_beams=3, num_return_sequences=3, max_new_tokens=12, eos_token_ids=sorted(eos))
    if rows is not None:
        assert rows.calls >= 2 * 2 * gen.spec.n_layers  # the beams' expansion and at least one reordering
    for prompt, result in zip(prompts, results, strict=True):
        expected = reference_beam_search(partial(next_logprobs, model), prompt, 3, 12, eos, 1.0, False)
        assert [c.token_ids for c in result.completions] == [tokens for tokens, _ in expected]


def test_same_tokens_as_separate_past_and_present(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """The contract's separate tensors on the same graph: sampled rows, seeded, agree token for token."""
    path, _ = ort_bundles["gpt2"]
    shared = Generator(path)
    separate = Generator(path)
    spec = separate.spec
    separate.session = DecoderSession(shared.session.session, spec.n_layers, spec.n_kv_heads, spec.head_dim)
    options = {"max_new_tokens": 30, "do_sample": True, "top_k": 20, "seed": 3, "num_return_sequences": 2}
    assert [g.token_ids for g in shared.generate(PROMPTS, **options)] == [
        g.token_ids for g in separate.generate(PROMPTS, **options)
    ]


def test_a_step_past_the_capacity_is_refused(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    session = Generator(ort_bundles["llama"][0]).session
    cache = session.empty_cache(1, capacity=4)
    ids = np.array([[1, 2, 3, 4, 5]])
    with pytest.raises(GenerateError, match="holds 4 positions"):
        session.step(ids, np.ones_like(ids), np.arange(5)[None], cache)


def test_portable_bundles_keep_separate_tensors(tmp_path: Path) -> None:
    spec = make_spec("llama", name="rt-portable", **WIDE)
    source = save_build(build_model(spec, seed=0), spec, tmp_path / "src")
    bundle = export_bundle(source, tmp_path / "bundle", verify=False).out
    gen = Generator(bundle)
    assert not gen.bundle.share_buffer and type(gen.session) is DecoderSession


def test_a_batch_that_would_run_past_the_context_is_split(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """A 2-token prompt padded to a 100-token one would reach cache position 140 in 40 steps; the
    graph's rotary tables stop at the context (128). The rows are decoded apart, each as it is alone."""
    path, model = ort_bundles["llama"]
    long, short = [(7 * i + 3) % 64 for i in range(100)], [5, 9]
    gen = Generator(path)
    results = gen.generate([long, short], max_new_tokens=40, do_sample=False)
    assert results[0].token_ids == torch_greedy(model, long, 28)  # stops at the context
    assert results[1].token_ids == torch_greedy(model, short, 40)
    beams = gen.generate([long, short], max_new_tokens=40, num_beams=2)
    alone = [gen.generate([p], max_new_tokens=40, num_beams=2)[0] for p in (long, short)]
    assert [b.token_ids for b in beams] == [a.token_ids for a in alone]


def test_bound_arrays_give_what_rebinding_every_step_gives(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """The CPU step's reused bound arrays (ids, positions, logits) against the general path that
    binds fresh ones every step (the CUDA path), on a padded batch whose rows leave at different
    steps (new shapes), sampling with penalties that edit the logits in place."""
    path, _ = ort_bundles["llama"]
    options = {"max_new_tokens": 30, "do_sample": True, "top_k": 20, "seed": 5, "repetition_penalty": 1.3}
    options["eos_token_ids"] = [3, 17]
    bound = Generator(path)
    general = Generator(path)
    general.session._vocab = None  # what the general path keys on: no static vocabulary size
    assert bound.session._vocab == 64
    got, want = bound.generate(PROMPTS, **options), general.generate(PROMPTS, **options)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    assert len({len(g.token_ids) for g in got}) > 1, "rows should finish at different steps"


def test_interleaved_streams_on_one_generator(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """Two streams advanced in turn, and a batch run between their steps, share one session's
    bindings: each stream's single-row steps rebind what the other changed, and every stream and
    the batch give what they give alone."""
    path, model = ort_bundles["llama"]
    gen = Generator(path)
    first = gen.stream_tokens(PROMPTS[0], max_new_tokens=20, do_sample=False)
    second = gen.stream_tokens(PROMPTS[2], max_new_tokens=20, do_sample=False)
    got: tuple[list[int], list[int]] = ([], [])
    batch = None
    for step in range(20):
        got[0].append(next(first))
        got[1].append(next(second))
        if step == 7:
            batch = gen.generate(PROMPTS[1:], max_new_tokens=5, do_sample=False)
    assert got[0] == torch_greedy(model, PROMPTS[0], 20)
    assert got[1] == torch_greedy(model, PROMPTS[2], 20)
    assert batch is not None
    assert [b.token_ids for b in batch] == [torch_greedy(model, p, 5) for p in PROMPTS[1:]]


def test_the_row_stepper_refuses_a_step_past_the_capacity(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    session = Generator(ort_bundles["llama"][0]).session
    ids = np.array([[1, 2]])
    _, cache = session.step(ids, np.ones_like(ids), np.arange(2)[None], session.empty_cache(1, capacity=2))
    stepper = session.row_stepper(cache)
    assert type(stepper).__name__ == "SharedRowStepper"
    with pytest.raises(GenerateError, match="holds 2 positions"):
        stepper(5, 2, np.ones((1, 3), dtype=np.int64))


def test_new_buffers_may_hold_anything(ort_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """On the CPU `empty_cache` leaves its buffers uninitialised: filled with NaN before the
    prefill, every free position read would spoil the logits; the tokens stay PyTorch's."""
    path, model = ort_bundles["gpt2"]
    gen = Generator(path)
    session = gen.session
    made = session.empty_cache

    def poisoned(batch: int, fixed: object = None, capacity: int | None = None) -> KVCache:
        cache = made(batch, fixed, capacity)  # type: ignore[arg-type]
        for value in cache.values:
            value.numpy()[...] = np.nan  # a view of the buffer
        return cache

    session.empty_cache = poisoned  # type: ignore[method-assign]
    for prompt in PROMPTS:
        alone = gen.generate([prompt], max_new_tokens=20, do_sample=False)[0]
        assert alone.token_ids == torch_greedy(model, prompt, 20)
    batch = gen.generate(PROMPTS, max_new_tokens=12, do_sample=False)
    assert [b.token_ids for b in batch] == [torch_greedy(model, prompt, 12) for prompt in PROMPTS]


def test_bound_arrays_are_kept_for_the_next_generation(
    ort_bundles: dict[str, tuple[Path, DecoderLM]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arrays bound for a prompt's shape and for the decode steps serve the next generation
    (the same objects), at most `KEEP_SHAPES` shapes are kept, none over `KEEP_BYTES`, and the
    tokens stay PyTorch's as shapes come and go."""
    from nima.runtime import shared_cache

    path, model = ort_bundles["llama"]
    gen = Generator(path)
    session = gen.session
    assert gen.generate([PROMPTS[0]], max_new_tokens=10, do_sample=False)[0].token_ids == torch_greedy(
        model, PROMPTS[0], 10
    )
    step_arrays = session._kept[(1, 1)]
    assert set(session._kept) == {(1, len(PROMPTS[0])), (1, 1)}
    for prompt in (PROMPTS[2], PROMPTS[0]):
        assert gen.generate([prompt], max_new_tokens=10, do_sample=False)[0].token_ids == torch_greedy(
            model, prompt, 10
        )
        assert session._kept[(1, 1)] is step_arrays
        assert len(session._kept) == shared_cache.KEEP_SHAPES
    assert session._kept[(1, len(PROMPTS[0]))][2].shape == (1, 1, 64), "the graph makes the last position's logits"
    monkeypatch.setattr(shared_cache, "KEEP_BYTES", 64 * 4 * 2)  # (B, 1, 64) float32 logits kept up to B = 2
    batch = [PROMPTS[0], PROMPTS[2], PROMPTS[0]]
    outs = gen.generate(batch, max_new_tokens=10, do_sample=False)
    assert [out.token_ids for out in outs] == [torch_greedy(model, prompt, 10) for prompt in batch]
    assert not any(shape[0] == 3 for shape in session._kept) and (1, 1) in session._kept
