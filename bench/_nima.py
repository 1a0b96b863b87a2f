"""Nima's runtime for the benchmarks: greedy decoding through `Generator` as a `Runner`."""

from __future__ import annotations

import time
from pathlib import Path

import _harness
from _harness import Runner, Timing

from nima.runtime import Generator


def nima_runner(label: str, bundle: Path, huge_pages: bool | None = None) -> Runner:
    """Nima's `Generator` with its defaults (the weights on 2 MB pages) unless ``huge_pages``
    forces them on (``True``) or off (``False``)."""
    pages = {} if huge_pages is None else {"huge_pages": huge_pages}
    generator = Generator(bundle, threads=_harness.THREADS, **pages)  # read now: scripts may set it

    def run(prompt: list[int], new_tokens: int) -> Timing:
        start = time.perf_counter()
        tokens: list[int] = []
        ttft = 0.0
        for token in generator.stream_tokens(prompt, max_new_tokens=new_tokens, do_sample=False):
            tokens.append(token)
            ttft = ttft or time.perf_counter() - start
        return Timing(tokens, ttft, time.perf_counter() - start)

    return Runner(label, run, lambda: None)
