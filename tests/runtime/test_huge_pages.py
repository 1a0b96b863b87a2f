"""`nima.runtime.huge_pages`: which memory is chosen, and that a session's weights end up on 2 MB pages."""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nima.runtime import generator as generator_module
from nima.runtime.huge_pages import HUGE, PAGE, anonymous_spans, fresh_chunks, huge_pages_for, wanted

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


def _residency(spans: list[tuple[int, int]], rng: np.random.Generator, full: float) -> dict:
    """Random residency in blocks of 128 pages: each block wholly resident with probability ``full``,
    else each page with probability 1/2."""
    out = {}
    for start, end in spans:
        blocks = (end - start) // (128 * PAGE)
        whole = rng.random(blocks) < full
        pages = (rng.random((blocks, 128)) < 0.5) | whole[:, None]
        out[(start, end)] = pages.reshape(-1).astype(np.uint8)
    return out


def _fresh_brute_force(before: dict, after: dict) -> set[int]:
    """Page by page: the aligned chunks all of whose pages are resident after, at most half before."""

    def resident(residency: dict, page: int) -> bool:
        return any(lo <= page < hi and bool(v[(page - lo) // PAGE]) for (lo, hi), v in residency.items())

    out = set()
    top = max(hi for _, hi in after)
    for chunk in range(0, top, HUGE):
        pages = range(chunk, chunk + HUGE, PAGE)
        if all(resident(after, page) for page in pages) and sum(resident(before, page) for page in pages) <= 256:
            out.add(chunk)
    return out


def test_fresh_chunks_match_a_page_by_page_search() -> None:
    rng = np.random.default_rng(0)
    unit = HUGE // 4
    for _ in range(60):
        points = np.sort(rng.choice(32, 6, replace=False))
        after = [(int(points[i]) * unit, int(points[i + 1]) * unit) for i in range(0, 6, 2)]
        before = []
        for start, end in after:
            if rng.random() < 0.7:  # part of this span was mapped before: a grown heap, or reused memory
                cut = int(rng.integers(start // unit + 1, end // unit + 1)) * unit
                before.append((start, cut) if rng.random() < 0.5 else (cut - unit, end))
        before_map, after_map = _residency(before, rng, 0.5), _residency(after, rng, 0.8)
        assert set(fresh_chunks(before_map, after_map)) == _fresh_brute_force(before_map, after_map)


# --- on this machine --------------------------------------------------------------------------------


class Mapping:
    """A private anonymous read-write mapping at a chosen place, written end to end (so resident)
    unless ``fill`` is False."""

    def __init__(self, size: int, at: int | None = None, fill: bool = True) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (MAP_FIXED if at is not None else 0)
        self.size = size
        self.at = _mmap(at, size, mmap.PROT_READ | mmap.PROT_WRITE, flags)
        if fill:
            self.fill()

    def fill(self) -> None:
        ctypes.memset(self.at, 1, self.size)

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
def test_only_memory_filled_inside_the_block_is_collapsed() -> None:
    """Memory in use before stays on 4 KB pages; memory mapped before but first written inside the
    block (how an allocator reuses free space) counts as the block's."""
    # The mappings sit in one reserved stretch with gaps between them, so that each is its own
    # entry in /proc/self/smaps (which counts huge pages per entry).
    reserve = 18 * HUGE
    base = _mmap(None, reserve, PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -(-base // HUGE) * HUGE + HUGE
    old = Mapping(4 * HUGE, at=start)
    reused = Mapping(4 * HUGE, at=start + 11 * HUGE, fill=False)
    with huge_pages_for() as promotion:
        new = Mapping(4 * HUGE, at=start + 5 * HUGE)
        reused.fill()
    assert promotion.collapsed == 8 * HUGE  # both are aligned: four whole 2 MB chunks each
    assert _huge_kb(new.at, new.at + new.size) == 4 * HUGE // 1024
    assert _huge_kb(reused.at, reused.at + reused.size) == 4 * HUGE // 1024
    assert _huge_kb(old.at, old.at + old.size) == 0
    _munmap(base, reserve)


@needs_collapse
def test_collapsing_in_the_background_finishes_after_the_block() -> None:
    """With ``background`` a thread collapses the chunks after the block; they all are once
    ``finished`` is set, and the memory's contents are unchanged."""
    reserve = 8 * HUGE
    base = _mmap(None, reserve, PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -(-base // HUGE) * HUGE + HUGE
    with huge_pages_for(background=True) as promotion:
        new = Mapping(4 * HUGE, at=start)
        ctypes.memmove(new.at, np.random.default_rng(0).bytes(new.size), new.size)
    before = ctypes.string_at(new.at, new.size)
    assert promotion.finished.wait(timeout=60)
    assert promotion.collapsed == 4 * HUGE
    assert _huge_kb(new.at, new.at + new.size) == 4 * HUGE // 1024
    assert ctypes.string_at(new.at, new.size) == before
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


_SESSION_CHECK = """
import sys
from pathlib import Path
import numpy as np
from nima.runtime.huge_pages import settle
from nima.runtime.session import make_session

def huge_kb():
    lines = Path("/proc/self/smaps").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith("AnonHugePages:"))

model, inputs = Path(sys.argv[1]), np.load(sys.argv[2])
plain = make_session(model, huge_pages=False)
before = huge_kb()
huge = make_session(model, huge_pages=True)
assert settle(timeout=60)  # the collapse runs on a thread
print(huge_kb() - before)
for i, session in enumerate((plain, huge)):
    np.save(sys.argv[3 + i], session.run(None, {"x": inputs})[0])
"""


@needs_collapse
def test_a_session_weights_land_on_huge_pages_and_compute_the_same(tmp_path: Path) -> None:
    """Run in a fresh interpreter, as a deployment does: a test process that has run other tests holds
    huge pages of its own, which the kernel may split while the session loads."""
    weight = _matmul_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((1, weight.shape[0])).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = [tmp_path / "plain.npy", tmp_path / "huge.npy"]
    done = subprocess.run(
        [sys.executable, "-c", _SESSION_CHECK, str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), *map(str, outputs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= HUGE // 1024, "an 8 MB weight should fill at least one 2 MB page"
    expected = x @ weight
    for output in outputs:
        np.testing.assert_allclose(np.load(output), expected, rtol=1e-4, atol=1e-4)


def test_by_size_bundles_up_to_the_limit_get_huge_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wanted`: a given True / False wins; ``None`` (choose by size) compares the graph files'
    bytes, external ``.data`` included, with `AUTO_LIMIT`."""
    from nima.runtime import huge_pages

    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"x" * 600)
    monkeypatch.setattr(huge_pages, "AUTO_LIMIT", 1000)
    assert wanted(None, [graph])
    graph.with_name("model.onnx.data").write_bytes(b"x" * 600)  # 1,200 bytes in all
    assert not wanted(None, [graph])
    assert wanted(True, [graph]) and not wanted(False, [tmp_path / "small.onnx"])
    encoder = tmp_path / "encoder.onnx"
    encoder.write_bytes(b"x" * 500)
    graph.with_name("model.onnx.data").unlink()
    assert wanted(None, [graph]) and not wanted(None, [graph, encoder]), "an encoder's weights count too"


def test_the_generator_decides_per_bundle(
    bundles: dict[str, tuple[Path, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Generator` hands `make_session` the choice: on by default whatever the size, off when
    asked, and by size for ``None`` (what ``nima generate`` passes unless told)."""
    from nima.runtime import huge_pages

    asked: list[bool] = []
    made = generator_module.make_session

    def recording(path: Path, provider: str, threads: object, spin: bool, huge: bool) -> object:
        asked.append(huge)
        return made(path, provider, threads, spin, huge)  # type: ignore[arg-type]

    monkeypatch.setattr(generator_module, "make_session", recording)
    path = bundles["llama"][0]
    assert generator_module.Generator(path).huge_pages
    assert not generator_module.Generator(path, huge_pages=False).huge_pages
    assert generator_module.Generator(path, huge_pages=None).huge_pages
    monkeypatch.setattr(huge_pages, "AUTO_LIMIT", 1000)  # the test bundle's graph is larger
    assert generator_module.Generator(path).huge_pages, "the default does not look at the size"
    assert not generator_module.Generator(path, huge_pages=None).huge_pages
    assert asked == [True, False, True, True, False]
