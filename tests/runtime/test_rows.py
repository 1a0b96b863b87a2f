"""`Limits.batches`: which rows of a left-padded batch decode together."""

from __future__ import annotations

import itertools

import pytest

from nima.runtime.rows import Limits


def limits(max_new: int, context: int) -> Limits:
    return Limits(eos_ids=(), max_new_tokens=max_new, context=context)


def test_a_batch_that_fits_stays_whole_and_in_order() -> None:
    assert limits(8, 64).batches([30, 5, 12]) == [[0, 1, 2]]


@pytest.mark.parametrize(("max_new", "context"), [(40, 128), (10, 32), (100, 50)])
def test_split_groups_fit_and_cover_every_row(max_new: int, context: int) -> None:
    """Every group fits the context and every row is in exactly one group, for all prompt-length
    mixes of a few sizes (including prompts right below the context)."""
    lim = limits(max_new, context)
    sizes = sorted({1, 2, context // 3, context // 2, context - max(1, max_new // 2), context - 1})
    for lengths in itertools.product(sizes, repeat=3):
        groups = lim.batches(list(lengths))
        assert sorted(i for g in groups for i in g) == [0, 1, 2]
        assert all(g == sorted(g) for g in groups)
        assert all(lim.capacity([lengths[i] for i in g]) <= context for g in groups)
        if lim.capacity(list(lengths)) <= context:
            assert groups == [[0, 1, 2]]
        else:
            assert len(groups) > 1


def test_prompts_of_similar_length_share_a_group() -> None:
    """Two long prompts and a short one that runs on: the long ones go together. (A 98-token prompt
    could not join a 100-token one: it runs 30 steps to the context, to cache position 130.)"""
    assert limits(40, 128).batches([100, 2, 100]) == [[0, 2], [1]]
    assert limits(40, 128).batches([100, 2, 98]) == [[0], [2], [1]]
