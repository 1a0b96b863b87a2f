"""From a fresh process to tokens: loading, the first token, and the first 32-256 tokens, with the weights
on 4 KB pages, collapsed onto 2 MB pages before `Generator` returns, and collapsed on a thread after it
returns (`nima.runtime.huge_pages`; the runtime's default).

Each mode runs in its own fresh process (modes alternate within each round): `Generator` load time,
the first token's time after it, and the time from the start of loading until 32, 64, 128 and 256
greedy tokens are out (32-token prompt, 2 threads), then the tokens/s of a later 128-token decode.
Without ``--bundle`` it exports the 124M LLaMA-style model (random weights, fp32, ``--target ort``).

    .venv/bin/python bench/cold_start.py [--bundle BUNDLE] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import compile_nima, log

MODES = ("4 KB pages", "collapse, then return", "collapse on a thread")
MARKS = (32, 64, 128, 256)

CHILD = r"""
import sys, time
mode = sys.argv[2]
import nima.runtime.huge_pages as pages
import nima.runtime.session as session
from nima.runtime import Generator
if mode == "1":  # the collapse before returning, as before it moved to a thread
    session.huge_pages_for = lambda enabled, background: pages.huge_pages_for(enabled, background=False)
start = time.perf_counter()
generator = Generator(sys.argv[1], threads=2, huge_pages=mode != "0")
loaded = time.perf_counter()
prompt = list(range(7, 39))
new = min(256, generator.spec.max_seq_len - len(prompt))  # a small test bundle's context may end first
stream = generator.stream_tokens(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
next(stream)
first = time.perf_counter() - loaded
marks = {n: time.perf_counter() - loaded for n, _ in enumerate(stream, 2) if n in (32, 64, 128, 256)}
pages.settle()
steady_new = min(129, new)
stream = generator.stream_tokens(prompt, max_new_tokens=steady_new, min_new_tokens=steady_new, do_sample=False)
next(stream)
began = time.perf_counter()
steady = sum(1 for _ in stream) / (time.perf_counter() - began)
print(loaded - start, first, *(marks.get(n, float("nan")) for n in (32, 64, 128, 256)), steady)
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="an exported bundle (default: the 124M LLaMA-style one)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    compile_nima()  # loads are timed in fresh processes: as installed, not compiling Nima's source
    with tempfile.TemporaryDirectory() as scratch:
        bundle = args.bundle
        if bundle is None:
            from _models import SIZES, export_model

            log("small: build + export (fp32, --target ort)")
            bundle = export_model({**SIZES["small"], "max_seq_len": 512}, Path(scratch), target="ort", verify=False)[0]
        marks = " | ".join(f"{n} tokens s" for n in MARKS)
        print(f"| round | weights | load s | first token ms | {marks} | then tok/s |")
        print("|---:|---|---:|---:|" + "---:|" * len(MARKS) + "---:|")
        for r in range(args.rounds):
            for m in range(len(MODES)) if r % 2 == 0 else reversed(range(len(MODES))):
                log(f"round {r + 1}: {MODES[m]}")
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, str(bundle), str(m)], capture_output=True, text=True, check=True
                )
                load, first, *rest, steady = (float(x) for x in done.stdout.split()[-7:])
                cells = " | ".join("-" if t != t else f"{load + t:.2f}" for t in rest)  # from loading's start
                print(f"| {r + 1} | {MODES[m]} | {load:.2f} | {1e3 * first:.0f} | {cells} | {steady:.1f} |", flush=True)


if __name__ == "__main__":
    main()
