"""bench/speculative.py: plain and prompt-lookup runs, with real and always-wrong drafts, give the same tokens."""

from __future__ import annotations

from pathlib import Path

from bench_support import load_bench, small_bundle

from nima.runtime import Generator

speculative = load_bench("speculative")


def test_every_drafter_gives_the_plain_tokens(tmp_path: Path) -> None:
    bundle, _ = small_bundle(tmp_path, "ort")
    generator = Generator(bundle)
    prompt = [5, 6, 7, 8] * 8
    _, plain = speculative.timed(generator, prompt, 0)
    for k, propose in ((4, None), (8, None), (4, speculative.wrong)):
        tps, tokens = speculative.timed(generator, prompt, k, propose)
        assert tokens == plain and tps > 0
    assert len(plain) == speculative.NEW_TOKENS
