"""Exact match of an exported word-reversal bundle on the held-out pairs, through the ONNX runtime.

The held-out pairs are the last ``--held-out`` lines of the TSV that examples/reverse_words.py
wrote (the run's validation split); each source is generated greedily by `nima.runtime.Generator`
(encoder once per batch, cached decoder steps) and compared with its target as text.

    .venv/bin/python examples/reverse_words_eval.py bundle/reverse-words runs/reverse-words.tsv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nima.runtime import Generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("pairs", type=Path, help="the TSV of examples/reverse_words.py")
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    lines = args.pairs.read_text(encoding="utf-8").splitlines()[-args.held_out :]
    pairs = [line.split("\t") for line in lines]
    generator = Generator(args.bundle)
    start = time.perf_counter()
    right = 0
    for i in range(0, len(pairs), args.batch):
        chunk = pairs[i : i + args.batch]
        results = generator.generate(sources=[s for s, _ in chunk], do_sample=False, max_new_tokens=20)
        right += sum(r.text == target for r, (_, target) in zip(results, chunk, strict=True))
    elapsed = time.perf_counter() - start
    print(f"exact match {right}/{len(pairs)} = {100 * right / len(pairs):.1f}% ({elapsed:.1f} s, ONNX Runtime, greedy)")


if __name__ == "__main__":
    main()
