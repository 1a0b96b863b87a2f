"""Move the memory a new ONNX Runtime session allocated onto 2 MB pages (Linux transparent huge pages).

A decode step streams every weight matrix once. On 4 KB pages that walk crosses a page every
1,024 floats: a TLB miss each time, and the hardware prefetcher stops at every page edge. On
2 MB pages both mostly go away; a 10M-parameter model decodes several percent faster here.
Most distributions set THP to ``madvise``, so no page is huge unless asked for, and ONNX
Runtime does not ask. numpy asks for its large arrays and PyTorch can be told to; this module
does it for a session's weights.

How: note the process's anonymous writable mappings before the session is created; afterwards,
every 2 MB-aligned, fully resident stretch of memory that was not mapped before is collapsed
in place with ``madvise(MADV_COLLAPSE)`` (Linux 6.1+). Only memory the session allocated is
touched, only memory already in use (no page is added, so the resident size does not grow),
and the call is a hint: any failure (another OS, an older kernel, THP set to ``never``)
leaves the memory as it was, and generation works the same, only without the speed-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HUGE = 2 << 20  # bytes in one x86-64 / arm64 transparent huge page
PAGE = 4096
MADV_COLLAPSE = 25  # linux/mman-common.h, since Linux 6.1
MAPS = Path("/proc/self/maps")

Span = tuple[int, int]  # [start, end) in bytes


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
        spans.append((start, end))
    return spans


def new_huge_ranges(before: list[Span], after: list[Span]) -> list[Span]:
    """2 MB-aligned ranges inside ``after`` that overlap nothing in ``before``, adjacent ones merged."""
    ranges: list[Span] = []
    for start, end in after:
        chunk = -(-start // HUGE) * HUGE  # first aligned address in the span
        while chunk + HUGE <= end:
            if not any(lo < chunk + HUGE and chunk < hi for lo, hi in before):
                if ranges and ranges[-1][1] == chunk:
                    ranges[-1] = (ranges[-1][0], chunk + HUGE)
                else:
                    ranges.append((chunk, chunk + HUGE))
            chunk += HUGE
    return ranges


@dataclass
class Promotion:
    """What `huge_pages_for` did: bytes collapsed onto huge pages, and bytes it tried."""

    collapsed: int = 0
    tried: int = 0
    errors: list[str] = field(default_factory=list)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return libc


def _resident(libc: ctypes.CDLL, start: int, length: int) -> bool:
    """Every 4 KB page of [start, start + length) is in memory (so collapsing adds none)."""
    pages = length // PAGE
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(start, length, vec) != 0:
        return False
    return all(byte & 1 for byte in vec)


def _read_spans() -> list[Span]:
    try:
        return anonymous_spans(MAPS.read_text())
    except OSError:
        return []


def collapse(libc: ctypes.CDLL, ranges: list[Span], promotion: Promotion) -> None:
    """``madvise(MADV_COLLAPSE)`` each fully resident 2 MB chunk of ``ranges``; tallies into ``promotion``."""
    for start, end in ranges:
        for chunk in range(start, end, HUGE):
            if not _resident(libc, chunk, HUGE):
                continue
            promotion.tried += HUGE
            if libc.madvise(chunk, HUGE, MADV_COLLAPSE) == 0:
                promotion.collapsed += HUGE
            else:
                errno = ctypes.get_errno()
                promotion.errors.append(f"{chunk:#x}: errno {errno}")


@contextmanager
def huge_pages_for(enabled: bool = True) -> Iterator[Promotion]:
    """Collapse onto huge pages what the ``with`` body newly allocated (see the module docstring)."""
    promotion = Promotion()
    libc = _libc() if enabled else None
    before = _read_spans() if libc is not None else []
    yield promotion
    if libc is None:
        return
    collapse(libc, new_huge_ranges(before, _read_spans()), promotion)
