"""Batch sampling: windows are next-token pairs, the global batch does not depend on how it is split."""

from __future__ import annotations

import numpy as np
import torch

from nima.train.batches import RandomWindows, eval_batches, windows

TOKENS = np.arange(1000, dtype=np.uint16)


def test_windows_are_shifted_pairs() -> None:
    batch = windows(TOKENS, torch.tensor([3, 500]), seq_len=4)
    assert batch["input_ids"].tolist() == [[3, 4, 5, 6], [500, 501, 502, 503]]
    assert batch["labels"].tolist() == [[4, 5, 6, 7], [501, 502, 503, 504]]
    assert batch["input_ids"].dtype == torch.int64


def _global(batch_size: int, accum: int, world: int, steps: int = 3) -> list[list[int]]:
    """The first token of every window each step, over all ranks, in global order."""
    samplers = [RandomWindows(TOKENS, seq_len=8, seed=7) for _ in range(world)]
    out = []
    for _ in range(steps):
        per_rank = [s.step_batches(batch_size, accum, rank, world) for rank, s in enumerate(samplers)]
        rows = [per_rank[r][m]["input_ids"][:, 0].tolist() for m in range(accum) for r in range(world)]
        out.append([x for row in rows for x in row])
    return out


def test_global_batch_is_independent_of_processes_and_accumulation() -> None:
    one = _global(batch_size=8, accum=1, world=1)
    assert _global(batch_size=4, accum=2, world=1) == one
    assert _global(batch_size=4, accum=1, world=2) == one
    assert _global(batch_size=2, accum=2, world=2) == one
    assert len(set(one[0])) > 1 and one[0] != one[1]


def test_generator_state_resumes_the_sequence() -> None:
    a = RandomWindows(TOKENS, 8, seed=1)
    a.step_batches(4, 1, 0, 1)
    state = a.state()
    expected = a.step_batches(4, 1, 0, 1)[0]["input_ids"]
    b = RandomWindows(TOKENS, 8, seed=999)
    b.load_state(state)
    assert state.dtype == torch.uint8
    assert torch.equal(b.step_batches(4, 1, 0, 1)[0]["input_ids"], expected)


def test_windows_stay_inside_the_data() -> None:
    tokens = np.arange(20, dtype=np.uint16)
    sampler = RandomWindows(tokens, seq_len=8, seed=0)
    for _ in range(50):
        batch = sampler.step_batches(16, 1, 0, 1)[0]
        assert int(batch["labels"].max()) <= 19
        assert batch["input_ids"].shape == (16, 8)


def test_eval_windows_are_shared_out_and_cover_the_split() -> None:
    whole = eval_batches(TOKENS, seq_len=8, n_windows=12, batch_size=4, rank=0, world=1)
    halves = [eval_batches(TOKENS, 8, 12, 4, rank, 2) for rank in (0, 1)]
    starts = sorted(int(x) for b in whole for x in b["input_ids"][:, 0])
    assert starts[0] == 0 and starts[-1] == 1000 - 9
    assert sorted(int(x) for h in halves for b in h for x in b["input_ids"][:, 0]) == starts
    assert [len(h) for h in halves] == [2, 2]
