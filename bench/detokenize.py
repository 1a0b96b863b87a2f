"""Streaming detokenization: cost per token of `nima.runtime.text.TextStream` against re-decoding.

`nima generate` turns each new token into text as it arrives. Re-decoding the whole token list at
every step (the baseline here, what `TextStream` did before it used `tokenizers`' `DecodeStream`)
costs more per token the longer the text; `DecodeStream` keeps a few tokens only. Both run on the
same token ids (Shakespeare, encoded with a byte-level BPE of 4,096 ids trained on it), in the same
process, alternating, with and without a stop string; the report is the median microseconds per
token of each and their ratio.

    cd bench && ../.venv/bin/python detokenize.py [--lengths 500 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from tokenizers import Tokenizer

from nima.runtime.text import TextStream, cut_at_stop
from nima.train.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def redecode(tokenizer: Tokenizer, ids: list[int], stops: tuple[str, ...]) -> str:
    """The baseline: decode everything so far at each token and release the new, final part."""
    tokens: list[int] = []
    sent, out = 0, []
    for token in ids:
        tokens.append(token)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue
        cut, stopped = cut_at_stop(text, stops)
        final = len(cut) if stopped else len(text)
        out.append(text[sent:final])
        sent = max(sent, final)
        if stopped:
            break
    return "".join(out)


def stream(tokenizer: Tokenizer, ids: list[int], stops: tuple[str, ...]) -> str:
    text = TextStream(tokenizer, stops)
    return "".join(text.push(token) for token in ids)


def per_token_us(run: object, tokenizer: Tokenizer, ids: list[int], stops: tuple[str, ...]) -> float:
    start = time.perf_counter()
    run(tokenizer, ids, stops)  # type: ignore[operator]
    return (time.perf_counter() - start) / len(ids) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 4000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    text = (ROOT.parent / "shared" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tokenizer = train_tokenizer("bpe", text, 4096).tokenizer
    all_ids = tokenizer.encode(text[:200_000]).ids
    print("| tokens | stop strings | re-decode µs/token | TextStream µs/token | speed-up |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        ids = all_ids[:length]
        for stops in ((), ("\n\n\n\n",)):  # a stop string that never occurs: every token is searched
            assert stream(tokenizer, ids, stops) == redecode(tokenizer, ids, stops)
            old, new = [], []
            for _ in range(args.rounds):
                old.append(per_token_us(redecode, tokenizer, ids, stops))
                new.append(per_token_us(stream, tokenizer, ids, stops))
            a, b = statistics.median(old), statistics.median(new)
            print(f"| {length} | {len(stops)} | {a:.1f} | {b:.2f} | {a / b:.0f}x |")


if __name__ == "__main__":
    main()
