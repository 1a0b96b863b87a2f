"""The running batch's cache moves against a left-padded batch prefilled at once, and the numpy key
angles against the builder's rotary tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nima.builders.positions import RotaryPositions
from nima.runtime import Generator
from nima.runtime.rows import left_pad
from nima.serve.batch import RunningBatch
from nima.serve.cache_shift import key_angles

PROMPTS = [[5, 6, 7, 8, 9], list(range(10, 27)), [30, 31]]


def reference_steps(generator: Generator, prompts: list[list[int]], steps: int) -> list[np.ndarray]:
    """Logits of a left-padded batch prefilled at once, then greedy steps: what `Generator` runs."""
    session = generator.session
    ids, mask, positions = left_pad(prompts, 0)
    cache = session.empty_cache(len(prompts), None, mask.shape[1] + steps + 1)
    logits, cache = session.step(ids, mask, positions, cache)
    found = [np.array(logits)]
    for _ in range(steps):
        mask = np.concatenate((mask, np.ones((len(prompts), 1), dtype=np.int64)), axis=1)
        positions = positions[:, -1:] + 1
        logits, cache = session.step(found[-1].argmax(-1)[:, None], mask, positions, cache)
        found.append(np.array(logits))
    return found


@pytest.mark.parametrize("kind", ["gpt2", "llama-ort", "llama3-ort", "mistral-ort"])
def test_rows_prefilled_alone_then_joined_match_a_batch_prefilled_at_once(kind: str, bundles: dict[str, Path]) -> None:
    generator = Generator(bundles[kind])
    expected = reference_steps(generator, PROMPTS, 4)
    batch = RunningBatch(
        generator.session,
        generator.spec.max_seq_len,
        key_angles(generator.bundle.model_spec, generator.bundle.manifest),
    )
    first = [batch.prefill(p) for p in PROMPTS[:2]]
    batch.join([(f, 1) for f in first])  # the short row moves right by 12
    step1 = batch.step(expected[0][:2].argmax(-1))
    np.testing.assert_allclose(step1, expected[1][:2], atol=1e-4)
    # the third row joins a batch of span 18; a lone row of 2 tokens moves right by 16
    third = batch.prefill(PROMPTS[2])
    np.testing.assert_allclose(third.logits, expected[0][2], atol=1e-5)
    batch.join([(third, 1)])
    assert batch.size == 3
    # the reference's third row ran two steps already; feed this batch the same history for rows 0 and 1
    step2 = batch.step(np.array([*expected[1][:2].argmax(-1), expected[0][2].argmax()]))
    np.testing.assert_allclose(step2[:2], expected[2][:2], atol=1e-4)
    np.testing.assert_allclose(step2[2], expected[1][2], atol=1e-4)  # its first step: as the batch's
    # the long row leaves: the columns only it used are trimmed, every row moves left
    batch.keep([0, 2])
    assert batch.length < 19
    step3 = batch.step(np.array([expected[2][0].argmax(), expected[1][2].argmax()]))
    np.testing.assert_allclose(step3[0], expected[3][0], atol=1e-4)
    np.testing.assert_allclose(step3[1], expected[2][2], atol=1e-4)


def test_moving_rows_without_rotating_keys_would_be_wrong(bundles: dict[str, Path]) -> None:
    """The ``ort`` graph rotates keys by cache index: the same join without the rotation gives other logits."""
    generator = Generator(bundles["llama-ort"])
    assert key_angles(generator.bundle.model_spec, generator.bundle.manifest) is not None
    expected = reference_steps(generator, PROMPTS[:2], 1)
    batch = RunningBatch(generator.session, generator.spec.max_seq_len, None)
    batch.join([(batch.prefill(p), 1) for p in PROMPTS[:2]])
    step = batch.step(expected[0].argmax(-1))
    assert np.abs(step[0] - expected[1][0]).max() > 1e-2  # the moved row
    np.testing.assert_allclose(step[1], expected[1][1], atol=1e-4)  # the row that did not move


def test_portable_graphs_move_rows_by_copying(bundles: dict[str, Path]) -> None:
    for kind in ("gpt2", "alibi"):
        generator = Generator(bundles[kind])
        assert key_angles(generator.bundle.model_spec, generator.bundle.manifest) is None


@pytest.mark.parametrize(
    "frequency_scaling",
    [
        None,
        {"kind": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_seq_len": 16},
    ],
)
def test_key_angles_equal_the_builders_rotary_tables(frequency_scaling: dict | None, bundles: dict[str, Path]) -> None:
    generator = Generator(bundles["llama-ort"])
    position = {"kind": "rope", "theta": 500.0, "scaling_factor": 2.0, "frequency_scaling": frequency_scaling}
    spec = generator.bundle.model_spec.model_copy(
        update={"position": type(generator.bundle.model_spec.position).model_validate(position)}
    )
    angles = key_angles(spec, generator.bundle.manifest)
    llama3 = None
    if frequency_scaling:
        llama3 = tuple(
            frequency_scaling[k] for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len")
        )
    rotary = RotaryPositions(spec.head_dim, 500.0, 2.0, llama3)  # type: ignore[arg-type]
    cos, sin = rotary.cache_rotary(50)  # (50, hd/2)
    np.testing.assert_allclose(np.cos(np.arange(50)[:, None] * angles), cos.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.sin(np.arange(50)[:, None] * angles), sin.numpy(), atol=1e-5)
