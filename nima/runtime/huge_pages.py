"""Move the memory a new ONNX Runtime session filled onto 2 MB pages (Linux transparent huge pages).

A decode step streams every weight matrix once. On 4 KB pages that walk crosses a page every
1,024 floats, each crossing a TLB miss; on 2 MB pages almost none are. Most distributions set
THP to ``madvise``, so no page is huge unless asked for, and ONNX Runtime does not ask (numpy
asks for its large arrays; PyTorch can be told to). Decoding gets faster, and loading slower:
collapsing copies the memory onto new pages (the measurements, with their commands:
docs/performance.md, "Huge pages").

Hence `wanted`: ``Generator(..., huge_pages=True)``, the default, collapses for every bundle: a
`Generator` lives for many generations, and the faster steps pay for the collapsing (at 124M on
that machine after roughly 700 to 2,700 tokens). Sessions collapse in the background
(`nima.runtime.session.make_session`): a thread does it while the caller goes on, so loading
takes no longer than without huge pages, however long collapsing takes (bench/cold_start.py). At
124M fp32 on 2 cores, in a run where collapsing took about 0.9 s, the load took 0.33 s against
1.2-1.3 s collapsing first, and 128 tokens were out 1.57 s after the load began against 2.4-2.5 s
(4 KB pages: 1.7 s); in a later run where it took 0.1 s, the thread delayed the first token by
50-60 ms (74-84 ms against 24) and 256 tokens by 0.1-0.3 s. Measured up to 124M only: the
collapse takes up to about 2 ms per MB there, so a multi-GB model's thread takes seconds of a
core from the first generations. ``None`` chooses by size: a bundle whose weight files hold at
most `AUTO_LIMIT` bytes gets huge pages and a larger one does not. ``nima generate`` uses
``None`` unless told: it loads the model for one run, where that core-time outweighs a few
percent of decoding. ``False`` leaves the pages alone.

Which memory: the pages that became resident while the session was created, that is, the
weights it unpacked and prepacked, wherever the allocator put them. Before creating it,
``malloc_trim`` hands the allocator's free pages back to the OS (so reused free space counts as
new) and ``mincore`` records which pages are resident; afterwards every 2 MB-aligned chunk that
is now wholly resident and was at least half non-resident before is collapsed in place with
``madvise(MADV_COLLAPSE)`` (Linux 6.1+). Only memory already in use is collapsed (no page is
added, so the resident size does not grow), and the call is a hint: any failure (another OS, an
older kernel, THP set to ``never``) leaves the memory as it was, and generation works the same,
only without the speed-up. Memory other code filled earlier (another runtime's weights in the
same process) is left alone.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HUGE = 2 << 20  # bytes in one x86-64 / arm64 transparent huge page
PAGE = 4096
PAGES = HUGE // PAGE
MADV_COLLAPSE = 25  # linux/mman-common.h, since Linux 6.1
MAX_SPAN = 64 << 30  # larger mappings are address-space reservations, not weights: skipped
MAPS = Path("/proc/self/maps")

AUTO_LIMIT = 128 << 20  # weight-file bytes up to which ``wanted(None, ...)`` turns huge pages on

Span = tuple[int, int]  # [start, end) in bytes
Residency = dict[Span, np.ndarray]  # per span, one uint8 per 4 KB page: 1 if resident


def wanted(choice: bool | None, graphs: Sequence[Path]) -> bool:
    """Whether to put the weights of ``graphs`` (ONNX files, each perhaps with ``NAME.data``
    external weights beside it) on huge pages: ``choice`` when it is a bool, else (``None``,
    choose by size) whether they hold at most `AUTO_LIMIT` bytes (see the module docstring)."""
    if choice is not None:
        return choice
    size = 0
    for graph in graphs:
        for path in (graph, graph.with_name(graph.name + ".data")):
            size += path.stat().st_size if path.is_file() else 0
    return size <= AUTO_LIMIT


def anonymous_spans(maps_text: str) -> list[Span]:
    """The writable private anonymous mappings (and the brk heap) listed in a /proc/<pid>/maps text."""
    spans = []
    for line in maps_text.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        path = parts[5] if len(parts) > 5 else ""
        perms = parts[1]
        if not perms.startswith("rw") or perms[3] != "p" or path not in ("", "[heap]"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if end - start <= MAX_SPAN:
            spans.append((start, end))
    return spans


def fresh_chunks(before: Residency, after: Residency) -> list[int]:
    """Start addresses of the 2 MB-aligned chunks wholly resident in ``after`` of which at least
    half the pages were not resident in ``before`` (or not mapped then)."""
    chunks = []
    for (start, end), pages in after.items():
        chunk = -(-start // HUGE) * HUGE  # first aligned address in the span
        while chunk + HUGE <= end:
            first = (chunk - start) // PAGE
            if pages[first : first + PAGES].all() and _resident_before(before, chunk) <= PAGES // 2:
                chunks.append(chunk)
            chunk += HUGE
    return chunks


def _resident_before(before: Residency, chunk: int) -> int:
    """How many of the chunk's pages ``before`` records as resident."""
    count = 0
    for (start, end), pages in before.items():
        lo, hi = max(start, chunk), min(end, chunk + HUGE)
        if lo < hi:
            count += int(pages[(lo - start) // PAGE : (hi - start) // PAGE].sum())
    return count


@dataclass
class Promotion:
    """What `huge_pages_for` did: bytes collapsed onto huge pages, bytes it tried, and failures;
    ``finished`` is set once it is done (at once, unless it collapses in the background)."""

    collapsed: int = 0
    tried: int = 0
    errors: list[str] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's symbols, libc's among them (glibc or musl)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return libc


def residency(libc: ctypes.CDLL) -> Residency:
    """Which pages of each anonymous mapping are resident now (one byte per page, 1 or 0)."""
    try:
        spans = anonymous_spans(MAPS.read_text())
    except OSError:
        return {}
    out = {}
    for start, end in spans:
        vec = np.zeros((end - start) // PAGE, np.uint8)
        if libc.mincore(start, end - start, vec.ctypes.data) == 0:  # a span unmapped meanwhile fails: skipped
            out[(start, end)] = vec & 1
    return out


@contextmanager
def huge_pages_for(enabled: bool = True, background: bool = False) -> Iterator[Promotion]:
    """Collapse onto huge pages the memory the ``with`` body filled (see the module docstring); with
    ``background``, a daemon thread does the collapsing after the body, so that the caller goes on
    (the memory is used meanwhile: a collapse copies a chunk's pages and swaps them in atomically)."""
    promotion = Promotion()
    libc = _libc() if enabled else None
    # glibc's malloc_trim hands free pages inside the heap back to the OS: before the body, so that
    # reused free space shows as new; after it, so that the body's freed temporaries are not
    # collapsed (nor left on huge pages for the next allocation to land on).
    trim = getattr(libc, "malloc_trim", lambda pad: 0)
    trim(0)
    before = residency(libc) if libc is not None else {}
    try:
        yield promotion
    except BaseException:
        promotion.finished.set()  # nothing collapsed
        raise
    if libc is None:
        promotion.finished.set()
        return
    trim(0)
    chunks = fresh_chunks(before, residency(libc))
    if background:
        with _LOCK:
            _BACKGROUND.append(promotion)
        threading.Thread(target=_collapse, args=(libc, chunks, promotion), name="nima-huge-pages", daemon=True).start()
    else:
        _collapse(libc, chunks, promotion)


_BACKGROUND: list[Promotion] = []  # collapses running on threads (`settle` waits for them); each leaves when done
_LOCK = threading.Lock()


def settle(timeout: float | None = None) -> bool:
    """Wait until every collapse started in the background has finished; False if ``timeout`` (seconds)
    passed first. For measurements and tests: generation does not need to wait."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _LOCK:
        running = list(_BACKGROUND)
    for promotion in running:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not promotion.finished.wait(left):
            return False
    return True


def _collapse(libc: ctypes.CDLL, chunks: list[int], promotion: Promotion) -> None:
    """``madvise(MADV_COLLAPSE)`` on each 2 MB chunk (ctypes lets go of the GIL during each call)."""
    for chunk in chunks:
        promotion.tried += HUGE
        if libc.madvise(chunk, HUGE, MADV_COLLAPSE) == 0:
            promotion.collapsed += HUGE
        else:
            promotion.errors.append(f"{chunk:#x}: errno {ctypes.get_errno()}")
    with _LOCK:  # a long-lived process makes sessions again and again: keep none that finished
        _BACKGROUND[:] = [other for other in _BACKGROUND if other is not promotion]
    promotion.finished.set()
