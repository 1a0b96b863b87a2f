"""`nima serve` under load: openai clients streaming completions at several concurrencies.

For the tiny (~9M) and small (~124M) LLaMA-style models (`_models.SIZES`, random weights, exported
with ``--target ort``), a `nima serve` process is started and N clients (the official ``openai``
library, async) each stream 128-token completions from 32-token prompts (token ids; ``min_tokens``
holds every completion to 128 tokens), at concurrency 1, 4, 16 and 64. Printed per concurrency:
total tokens/s, time to first token p50/p99, inter-token latency p50/p99 (gaps between a stream's
token chunks) and errors. Then the same load without the scheduler: threads that share one
`Generator` (which is not thread-safe, so they take turns under a lock) in this process, no HTTP.

Targets (issue #23), as ratios in one run: tokens/s at concurrency 16 >= 6x concurrency 1 on the
124M model, >= 3x on tiny; p99 inter-token latency at 16 <= 3x that at 1; zero errors.

    .venv/bin/python bench/serve.py [--models tiny small] [--concurrency 1 4 16 64] [--sample]
        [--prefill-budget N] [--no-threads]

``--sample``: temperature 0.8, top-p 0.95 and a seed per request instead of greedy decoding. Random
weights give near-flat distributions, the most expensive case for top-p (most of the vocabulary is
in the nucleus).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
from _harness import NEW_TOKENS, PROMPT_TOKENS, log
from _models import SIZES, export_model

from nima.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
MAX_BATCH = 16


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Load:
    """What one concurrency level measured."""

    def __init__(self) -> None:
        self.tokens = 0
        self.errors = 0
        self.ttft: list[float] = []
        self.itl: list[float] = []
        self.seconds = 0.0

    def row(self, label: str, concurrency: int) -> str:
        tps = self.tokens / self.seconds if self.seconds else 0.0
        ms = [1e3 * percentile(x, q) for x, q in ((self.ttft, 50), (self.ttft, 99), (self.itl, 50), (self.itl, 99))]
        return f"| {label} | {concurrency} | {tps:.0f} | " + " | ".join(f"{v:.1f}" for v in ms) + f" | {self.errors} |"

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def request_options(sample: bool, seed: int) -> dict[str, Any]:
    if sample:
        return {"temperature": 0.8, "top_p": 0.95, "seed": seed}
    return {"temperature": 0}


def prompts(vocab: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, PROMPT_TOKENS).tolist() for _ in range(count)]


async def stream_one(api: openai.AsyncOpenAI, prompt: list[int], options: dict[str, Any], load: Load) -> None:
    start = time.perf_counter()
    last = None
    got = 0
    try:
        stream = await api.completions.create(
            model="bench",
            prompt=prompt,
            max_tokens=NEW_TOKENS,
            stream=True,
            extra_body={"min_tokens": NEW_TOKENS, "return_token_ids": True},
            **options,
        )
        async for chunk in stream:
            ids = getattr(chunk.choices[0], "token_ids", None) if chunk.choices else None
            if not ids:
                continue
            now = time.perf_counter()
            if last is None:
                load.ttft.append(now - start)
            else:
                load.itl.append(now - last)
            last = now
            got += len(ids)
    except openai.OpenAIError as err:
        load.errors += 1
        log(f"error: {err}")
        return
    if got != NEW_TOKENS:
        load.errors += 1
    load.tokens += got


async def server_load(url: str, vocab: int, concurrency: int, sample: bool) -> Load:
    api = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    load = Load()
    batch = prompts(vocab, concurrency, seed=concurrency)
    await stream_one(api, batch[0], request_options(sample, 0), Load())  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(stream_one(api, p, request_options(sample, i), load) for i, p in enumerate(batch)))
    load.seconds = time.perf_counter() - start
    await api.close()
    return load


def generator_load(bundle: Path, vocab: int, concurrency: int, sample: bool) -> Load:
    """The same requests from threads sharing one `Generator` under a lock: no scheduler, no HTTP."""
    from nima.runtime import Generator

    generator = Generator(bundle, spin=False)
    lock = threading.Lock()
    load = Load()
    batch = prompts(vocab, concurrency, seed=concurrency)

    def one(i: int, prompt: list[int]) -> None:
        start = time.perf_counter()
        opts = request_options(sample, i)
        options = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": opts["temperature"] > 0}
        if sample:
            options |= {"temperature": 0.8, "top_p": 0.95, "seed": i}
        last = None
        with lock:
            for _ in generator.stream_tokens(prompt, **options):
                now = time.perf_counter()
                (load.ttft if last is None else load.itl).append(now - (start if last is None else last))
                last = now
                load.tokens += 1

    one(0, batch[0])  # warm-up
    load = Load()
    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(batch)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.perf_counter() - start
    return load


def start_server(bundle: Path, budget: int | None = None, threads: int | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "nima", "serve", str(bundle), "--port", str(port), "--model-name", "bench"]
    cmd += ["--max-batch", str(MAX_BATCH), "--max-queue", "256"]
    cmd += [] if budget is None else ["--prefill-budget", str(budget)]
    cmd += [] if threads is None else ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"nima serve exited with {proc.returncode}")
        time.sleep(0.2)
    raise SystemExit("nima serve did not become healthy")


def bench_model(
    size: str,
    root: Path,
    levels: list[int],
    sample: bool,
    budget: int | None,
    threads: bool,
    server_threads: int | None = None,
) -> None:
    log(f"{size}: build + export (ort target)")
    data = {**SIZES[size], "max_seq_len": 512}
    kept = root / size / "bundle"
    if (kept / "model.onnx").is_file():  # --keep from an earlier run
        bundle, spec = kept, spec_from_dict(data)
    else:
        bundle, spec = export_model(data, root / size, target="ort", verify=False, force=True)
    proc, url = start_server(bundle, budget, server_threads)
    served: dict[int, Load] = {}
    try:
        for level in levels:
            log(f"{size}: {level} concurrent clients through nima serve")
            served[level] = asyncio.run(server_load(url, spec.vocab_size, level, sample))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    alone: dict[int, Load] = {}
    for level in levels if threads else []:
        log(f"{size}: {level} threads on one Generator")
        alone[level] = generator_load(bundle, spec.vocab_size, level, sample)
    print(
        f"\n### {size} ({'sampled' if sample else 'greedy'}, {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens)\n"
    )
    print("| load | clients | tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for level in levels:
        print(served[level].row("nima serve", level))
    for level in alone:
        print(alone[level].row("threads, one Generator", level))
    if 1 in served and 16 in served:
        target = 6 if size == "small" else 3
        ratio = served[16].tps / served[1].tps
        itl = percentile(served[16].itl, 99) / percentile(served[1].itl, 99)
        errors = sum(load.errors for load in served.values())
        print(
            f"\ntok/s at 16 clients / at 1: {ratio:.2f}x (target >= {target}x); "
            f"p99 inter-token latency at 16 / at 1: {itl:.2f}x (target <= 3x); errors: {errors} (target 0)"
        )
        if 16 in alone:
            print(f"scheduler vs threads on one Generator at 16 clients: {served[16].tps / alone[16].tps:.2f}x tok/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--sample", action="store_true", help="temperature 0.8, top-p 0.95 instead of greedy")
    parser.add_argument("--keep", type=Path, help="keep the bundles here")
    parser.add_argument("--prefill-budget", type=int, help="the server's --prefill-budget (default: its own)")
    parser.add_argument("--no-threads", action="store_true", help="skip the threads-on-one-Generator rows")
    parser.add_argument("--server-threads", type=int, help="the server's --threads (default: its own, all cores)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"bench/serve.py on {os.cpu_count()} cores, max batch {MAX_BATCH}")
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for size in args.models:
            bench_model(
                size, root, args.concurrency, args.sample, args.prefill_budget, not args.no_threads, args.server_threads
            )


if __name__ == "__main__":
    main()
