"""bench/serve.py: a real `nima serve` process and the threads-on-one-Generator baseline both run a small load."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bench_support import load_bench, small_bundle

serve = load_bench("serve")


def test_the_server_and_the_baseline_each_stream_every_token(tmp_path: Path) -> None:
    bundle, spec = small_bundle(tmp_path, "ort")
    proc, url = serve.start_server(bundle)
    try:
        served = asyncio.run(serve.server_load(url, spec.vocab_size, 3, sample=True))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    alone = serve.generator_load(bundle, spec.vocab_size, 3, sample=False)
    for load in (served, alone):
        assert load.errors == 0 and load.tokens == 3 * serve.NEW_TOKENS
        assert len(load.ttft) == 3 and len(load.itl) == 3 * (serve.NEW_TOKENS - 1)
        assert load.seconds > 0 and "| 3 |" in load.row("x", 3)
