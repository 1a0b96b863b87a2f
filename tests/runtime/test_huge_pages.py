"""`nima.runtime.huge_pages`: which memory is chosen, and that a session's weights end up on 2 MB pages."""

from __future__ import annotations

import ctypes
import itertools
import mmap
import random
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nima.runtime.huge_pages import HUGE, anonymous_spans, huge_pages_for, new_huge_ranges
from nima.runtime.session import make_session

MAPS = """\
55d0c0000000-55d0c0021000 r--p 00000000 08:01 1234   /usr/bin/python3.11
55d0c2000000-55d0c8000000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
7f0000800000-7f0000a00000 rw-s 00000000 00:01 99     /dev/zero (deleted)
7f0000a00000-7f0000c00000 rw-p 00001000 08:01 555    /usr/lib/libfoo.so
7f0000c00000-7f0000e00000 r--p 00000000 00:00 0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0      [stack]
"""


def test_spans_are_private_writable_anonymous_memory_and_the_heap() -> None:
    assert anonymous_spans(MAPS) == [(0x55D0C2000000, 0x55D0C8000000), (0x7F0000000000, 0x7F0000800000)]


def _chunks_brute_force(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> set[int]:
    """Every aligned 2 MB chunk wholly inside some ``after`` span and touching no byte of ``before``."""
    out = set()
    for start, end in after:
        for chunk in range(0, end, HUGE):
            inside = start <= chunk and chunk + HUGE <= end
            fresh = all(not (lo <= byte < hi) for lo, hi in before for byte in (chunk, chunk + HUGE - 1)) and all(
                not (chunk <= lo < chunk + HUGE) for lo, _ in before
            )
            if inside and fresh:
                out.add(chunk)
    return out


def test_new_ranges_match_a_brute_force_search() -> None:
    rng = random.Random(0)
    unit = HUGE // 4
    for _ in range(300):
        points = sorted(rng.sample(range(0, 64), 8))
        after = [(points[i] * unit, points[i + 1] * unit) for i in range(0, 8, 2)]
        before = []
        for start, end in after:
            if rng.random() < 0.6:  # part of this span existed before: a grown heap, or a reused one
                cut = rng.randint(start // unit + 1, end // unit) * unit
                before.append((start, cut) if rng.random() < 0.5 else (cut - unit, end))
        ranges = new_huge_ranges(before, after)
        got = {chunk for lo, hi in ranges for chunk in range(lo, hi, HUGE)}
        assert got == _chunks_brute_force(before, after)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), "adjacent ranges are merged, in order"


# --- on this machine --------------------------------------------------------------------------------


class Mapping:
    """A private anonymous read-write mapping at a chosen place, written end to end (so resident)."""

    def __init__(self, size: int, at: int | None = None) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (MAP_FIXED if at is not None else 0)
        self.size = size
        self.at = _mmap(at, size, mmap.PROT_READ | mmap.PROT_WRITE, flags)
        ctypes.memset(self.at, 1, size)

    def close(self) -> None:
        _munmap(self.at, self.size)


MAP_FIXED = 0x10
PROT_NONE = 0
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _mmap(at: int | None, size: int, prot: int, flags: int) -> int:
    address = _libc.mmap(at, size, prot, flags, -1, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), f"mmap failed: errno {ctypes.get_errno()}"
    return int(address)


def _munmap(at: int, size: int) -> None:
    _libc.munmap(at, size)


def _huge_kb(start: int, end: int) -> int:
    """AnonHugePages, in kB, of the mappings that overlap [start, end)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < end and start < hi
        elif inside and head == "AnonHugePages:":
            total += int(line.split()[1])
    return total


def _collapse_works() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    with huge_pages_for() as promotion:
        area = Mapping(4 * HUGE)
    area.close()
    return promotion.collapsed > 0


needs_collapse = pytest.mark.skipif(not _collapse_works(), reason="no MADV_COLLAPSE here (Linux 6.1+ with THP)")


@needs_collapse
def test_only_memory_mapped_inside_the_block_is_collapsed() -> None:
    # Both mappings sit in one reserved stretch, with unmapped-for-use gaps around each, so that
    # each is its own entry in /proc/self/smaps (which counts huge pages per entry).
    reserve = 12 * HUGE
    base = _mmap(None, reserve, PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -(-base // HUGE) * HUGE + HUGE
    old = Mapping(4 * HUGE, at=start)
    with huge_pages_for() as promotion:
        new = Mapping(4 * HUGE, at=start + 5 * HUGE)
    assert promotion.collapsed == 4 * HUGE  # the new mapping is aligned: four whole 2 MB chunks
    assert _huge_kb(new.at, new.at + new.size) == 4 * HUGE // 1024
    assert _huge_kb(old.at, old.at + old.size) == 0
    _munmap(base, reserve)


@needs_collapse
def test_pages_not_in_memory_are_left_alone() -> None:
    """Collapsing would fill the gaps with zero pages; a mapping never written keeps its size."""
    with huge_pages_for() as promotion:
        at = _mmap(None, 4 * HUGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    assert promotion.tried == 0
    _munmap(at, 4 * HUGE)


def _matmul_graph(path: Path, rows: int = 1024, cols: int = 2048) -> np.ndarray:
    """A one-MatMul graph with an 8 MB weight, written to ``path``; returns the weight."""
    weight = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return weight


def _process_huge_kb() -> int:
    lines = Path("/proc/self/smaps").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith("AnonHugePages:"))


@needs_collapse
def test_a_session_weights_land_on_huge_pages_and_compute_the_same(tmp_path: Path) -> None:
    weight = _matmul_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((1, weight.shape[0])).astype(np.float32)
    plain = make_session(tmp_path / "m.onnx", huge_pages=False)
    before = _process_huge_kb()
    huge = make_session(tmp_path / "m.onnx", huge_pages=True)
    assert _process_huge_kb() - before >= HUGE // 1024, "an 8 MB weight should fill at least one 2 MB page"
    expected = x @ weight
    for session in (plain, huge):
        np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-4)
