"""Make the word-reversal pairs of the documented encoder-decoder run from tinyshakespeare.

Source: a line of 3 to 12 words (distinct lines only); target: its words in reverse order.
The last ``--held-out`` pairs of the TSV are the validation set: lines chosen at random
(seeded) among those whose every word also occurs in the remaining (training) lines, so the
task tests reordering, not guessing unseen words. The script prints the ``nima train``
command whose ``training.val_fraction`` makes exactly those lines the validation split.

    .venv/bin/python examples/reverse_words.py ../shared/data/tinyshakespeare.txt -o runs/reverse-words.tsv
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path


def reverse_pairs(text: str, held_out: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training pairs, held-out pairs) of the distinct lines with 3 to 12 words."""
    lines = list(dict.fromkeys(" ".join(line.split()) for line in text.splitlines() if 3 <= len(line.split()) <= 12))
    counts = Counter(word for line in lines for word in line.split())
    rng = random.Random(seed)
    order = list(range(len(lines)))
    rng.shuffle(order)
    chosen: set[int] = set()
    for i in order:
        words = lines[i].split()
        need = Counter(words)
        if all(counts[w] > n for w, n in need.items()):  # every word still occurs in some other line
            chosen.add(i)
            counts.subtract(need)
            if len(chosen) == held_out:
                break
    if len(chosen) < held_out:
        raise SystemExit(f"only {len(chosen)} lines can be held out with all their words seen in training")

    def pair(line: str) -> tuple[str, str]:
        return line, " ".join(reversed(line.split()))

    train = [pair(line) for i, line in enumerate(lines) if i not in chosen]
    return train, [pair(lines[i]) for i in sorted(chosen)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", type=Path, help="tinyshakespeare.txt")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the .tsv file to write")
    parser.add_argument("--held-out", type=int, default=500, help="validation lines (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, held = reverse_pairs(args.text.read_text(encoding="utf-8"), args.held_out, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{s}\t{t}\n" for s, t in train + held), encoding="utf-8")
    fraction = len(held) / (len(train) + len(held))  # round(n * fraction) == len(held): nima's split rule
    print(f"wrote {args.out}: {len(train):,} training and {len(held):,} held-out pairs")
    print(
        f"nima train specs/reverse-words.yaml --data {args.out} --set training.val_fraction={fraction!r} "
        "-o runs/reverse-words"
    )


if __name__ == "__main__":
    main()
