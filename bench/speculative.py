"""Prompt-lookup decoding against plain greedy decoding, same bundle, same tokens.

For the tiny (~9M) and small (~124M) LLaMA-style `ort` bundles (random weights), greedy decoding of
128 tokens after a 32-token prompt, plain and with ``prompt_lookup_num_tokens`` 4 and 8, in
interleaved rounds (median tok/s of each, and the median of per-round ratios). Prompts: random
tokens, and an 8-token passage repeated four times. Random weights fall into loops, which the
drafts predict: the "repetitive" case. The other side, text that does not repeat, is bounded by the
worst case: a drafter that is always wrong (every draft rejected at its first token; the draft
length adapts down to one), which measures what checking drafts costs when none is taken.
Greedy tokens are checked equal to plain decoding's in every run.

Then speculative decoding with a draft bundle on the small (124M) target: the same weights
quantized to int4 (a draft that reads an eighth of the bytes and mostly agrees), and an unrelated
random model of the tiny shape with the target's vocabulary (a draft that is always wrong: the
draft length adapts down to one, then drafting pauses). Greedy, same tokens checked.

With ``--trained TARGET DRAFT`` (two model folders written by ``nima train`` on the same text with
the same tokenizer) only a trained pair is measured: the target exported fp32, its int8 and int4
copies and the DRAFT model each as its draft bundle, on prompts of real text from
``../shared/data/tinyshakespeare.txt``'s last tenth (the validation split): a passage to continue,
and the same passage given twice and cut mid-way (continuing means copying: the repetitive case).
Each line also gives the share of greedy choices the draft and the target agree on over the
continuation (teacher-forced: both score the target's own tokens).

Targets (issue #26): >= 1.5x tokens/s on a repetitive task, >= 0.95x where drafts fail.

    .venv/bin/python bench/speculative.py [--models tiny small] [--rounds 5] [--keep DIR] [--no-draft]
    .venv/bin/python bench/speculative.py --trained TARGET_RUN DRAFT_RUN [--rounds 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import NEW_TOKENS, PROMPT_TOKENS, log
from _models import SIZES, export_model

from nima.export.bundle import export_bundle
from nima.runtime import Generator
from nima.runtime.lookup import decode_lookup
from nima.runtime.rows import Row
from nima.spec import spec_from_dict


def wrong(history: list[int], n: int) -> list[int]:
    """A draft greedy decoding (almost) never takes on these models: ids 1-7 in turn, never what the random
    weights' loops hold. The worst case for prompt lookup: every step that drafts is rejected."""
    return [(history[-1] + 1 + i) % 7 + 1 for i in range(n)]


def timed(generator: Generator, prompt: list[int], k: int, propose=None) -> tuple[float, list[int]]:  # noqa: ANN001
    opts = generator.options(max_new_tokens=NEW_TOKENS, do_sample=False)
    limits = generator._limits(opts)
    row = Row(list(prompt))
    start = time.perf_counter()
    if k == 0:
        tokens = generator.generate([prompt], max_new_tokens=NEW_TOKENS, do_sample=False)[0].token_ids
    else:
        kwargs = {"propose": propose} if propose is not None else {}
        for _ in decode_lookup(generator.session, row, limits, k, **kwargs):
            pass
        tokens = row.tokens
    return len(tokens) / (time.perf_counter() - start), tokens


def bench_model(size: str, root: Path, rounds: int) -> None:
    data = {**SIZES[size], "max_seq_len": 512}
    kept = root / size / "bundle"
    if (kept / "model.onnx").is_file():
        bundle, spec = kept, spec_from_dict(data)
    else:
        log(f"{size}: build + export (ort target)")
        bundle, spec = export_model(data, root / size, target="ort", verify=False, force=True)
    generator = Generator(bundle, threads=2)
    rng = np.random.default_rng(0)
    prompts = {
        "random prompt": rng.integers(0, spec.vocab_size, PROMPT_TOKENS).tolist(),
        "repeated passage": rng.integers(0, spec.vocab_size, 8).tolist() * (PROMPT_TOKENS // 8),
    }
    print(f"\n### {size} ({NEW_TOKENS} new tokens, median of {rounds} rounds)\n")
    print("| prompt | drafts | plain tok/s | lookup tok/s | lookup / plain, per round |")
    print("|---|---|---|---|---|")
    for name, prompt in prompts.items():
        for label, k, propose in (("k=4", 4, None), ("k=8", 8, None), ("k=4, always wrong", 4, wrong)):
            plain, fast, ratios = [], [], []
            for r in range(rounds):
                order = [(0, None), (k, propose)] if r % 2 == 0 else [(k, propose), (0, None)]
                got = {}
                for kk, pp in order:
                    got[kk] = timed(generator, prompt, kk, pp)
                if got[k][1] != got[0][1]:
                    raise SystemExit(f"{size} {name} {label}: tokens differ from plain greedy decoding")
                plain.append(got[0][0])
                fast.append(got[k][0])
                ratios.append(got[k][0] / got[0][0])
            print(
                f"| {name} | {label} | {statistics.median(plain):.0f} | {statistics.median(fast):.0f} | "
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
            )


def plain_or_drafted(generator: Generator, prompt: list[int], drafted: bool, k: int) -> tuple[float, list[int]]:
    """(tok/s, tokens) of greedy decoding, with the generator's draft bundle proposing up to ``k`` tokens, or
    without it."""
    start = time.perf_counter()
    if drafted:
        tokens = generator.generate([prompt], max_new_tokens=NEW_TOKENS, do_sample=False, num_assistant_tokens=k)[
            0
        ].token_ids
    else:
        assert generator.draft is not None
        draft, generator.draft = generator.draft, None  # the same target session, without the draft
        try:
            tokens = generator.generate([prompt], max_new_tokens=NEW_TOKENS, do_sample=False)[0].token_ids
        finally:
            generator.draft = draft
    return len(tokens) / (time.perf_counter() - start), tokens


def bench_draft(root: Path, rounds: int) -> None:
    """The small target with an int4 copy of itself, and with an unrelated tiny model, as its draft."""
    data = {**SIZES["small"], "max_seq_len": 512}
    folder = root / "small"
    if not (folder / "bundle" / "model.onnx").is_file():
        log("small: build + export (ort target)")
        export_model(data, folder, target="ort", verify=False, force=True)
    drafts = {"int4 copy of the target": folder / "draft-int4", "unrelated tiny model": root / "tiny-32k" / "bundle"}
    if not (drafts["int4 copy of the target"] / "model.onnx").is_file():
        log("small: int4 draft")
        export_bundle(folder / "model", drafts["int4 copy of the target"], target="ort", quantize="int4", verify=False)
    if not (drafts["unrelated tiny model"] / "model.onnx").is_file():
        log("tiny with the small model's vocabulary: the unrelated draft")
        tiny = {**SIZES["tiny"], "vocab_size": data["vocab_size"], "max_seq_len": 512}
        export_model(tiny, root / "tiny-32k", seed=99, target="ort", verify=False, force=True)
    rng = np.random.default_rng(0)
    spec = spec_from_dict(data)
    prompts = {
        "random prompt": rng.integers(0, spec.vocab_size, PROMPT_TOKENS).tolist(),
        "repeated passage": rng.integers(0, spec.vocab_size, 8).tolist() * (PROMPT_TOKENS // 8),
    }
    print(f"\n### small target, a draft bundle ({NEW_TOKENS} new tokens, median of {rounds} rounds)\n")
    print("| prompt | draft | draft tokens | plain tok/s | drafted tok/s | drafted / plain, per round |")
    print("|---|---|---|---|---|---|")
    for label, path in drafts.items():
        generator = Generator(folder / "bundle", threads=2, draft=path)
        for name, prompt in prompts.items():
            for k in (4, 8):
                print(f"| {name} | {label} | {k} | {drafted_rounds(generator, prompt, k, rounds, f'{label} {name}')} |")


def drafted_rounds(generator: Generator, prompt: list[int], k: int, rounds: int, what: str) -> str:
    """Plain and drafted greedy decoding of ``prompt`` in ``rounds`` alternating rounds, tokens checked equal:
    "plain tok/s | drafted tok/s | median ratio (range)", medians."""
    plain, fast, ratios = [], [], []
    for r in range(rounds):
        got = {}
        for drafted in (r % 2 == 1, r % 2 == 0):
            got[drafted] = plain_or_drafted(generator, prompt, drafted, k)
        if got[True][1] != got[False][1]:
            raise SystemExit(f"{what}: tokens differ from plain greedy decoding")
        plain.append(got[False][0])
        fast.append(got[True][0])
        ratios.append(got[True][0] / got[False][0])
    spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
    return f"{statistics.median(plain):.0f} | {statistics.median(fast):.0f} | {spread}"


TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
PASSAGE = 80  # characters of text in the prompt to continue (given twice, plus 128 new, within a 256 context)


def agreement(target: Generator, draft: Generator, prompt: list[int], tokens: list[int]) -> float:
    """The share of positions of ``tokens`` (the target's greedy continuation of ``prompt``) where the
    draft's greedy choice, given the same tokens before it, is the target's: one multi-token run each."""
    sequence = np.array([prompt + tokens], dtype=np.int64)  # (1, T)
    length = sequence.shape[1]
    choices = []
    for generator in (target, draft):
        cache = generator.session.empty_cache(1, None, length)
        ones = np.ones((1, length), dtype=np.int64)
        positions = np.arange(length, dtype=np.int64)[None]
        logits, _ = generator.session.step_all(sequence, ones, positions, cache)  # (T, V)
        choices.append(logits[len(prompt) - 1 : -1].argmax(axis=-1))
    return float((choices[0] == choices[1]).mean())


def bench_trained(target_run: Path, draft_run: Path, root: Path, rounds: int) -> None:
    """A trained target with three drafts: its own int8 and int4 copies, and a small model trained beside it."""
    for run in (target_run, draft_run):
        missing = [name for name in ("nima.json", "model.safetensors", "tokenizer.json") if not (run / name).is_file()]
        if missing:
            raise SystemExit(f"{run}: not a trained model folder (no {', '.join(missing)}); give two `nima train` runs")
    bundles = {"target": (target_run, None), "int8 copy": (target_run, "int8"), "int4 copy": (target_run, "int4")}
    bundles["small trained model"] = (draft_run, None)
    for name, (source, quantize) in bundles.items():
        out = root / name.replace(" ", "-")
        if not (out / "model.onnx").is_file():
            log(f"{name}: export ({quantize or 'fp32'}, ort target)")
            export_bundle(source, out, target="ort", quantize=quantize, verify=quantize is None, force=True)
    text = TEXT.read_text()
    start = int(len(text) * 0.9)
    start = text.index("\n\n", start) + 2  # a speaker's first line
    passage = text[start : start + PASSAGE]
    prompts = {"passage": passage, "passage given twice, cut mid-way": passage + "\n\n" + passage[: PASSAGE // 2]}
    target = Generator(root / "target", threads=2)
    print(f"\n### trained target ({target.spec.n_layers} layers, d_model {target.spec.d_model}), a draft bundle")
    print(f"({NEW_TOKENS} new tokens, greedy, median of {rounds} rounds)\n")
    print("| prompt | draft | agreement | draft tokens | plain tok/s | drafted tok/s | drafted / plain, per round |")
    print("|---|---|---:|---|---:|---:|---|")
    for label in ("int8 copy", "int4 copy", "small trained model"):
        path = root / label.replace(" ", "-")
        generator = Generator(root / "target", threads=2, draft=path)
        draft = Generator(path, threads=2)
        for name, text_prompt in prompts.items():
            prompt = generator.encode(text_prompt)
            plain_tokens = plain_or_drafted(generator, prompt, False, 4)[1]
            agree = agreement(target, draft, prompt, plain_tokens)
            for k in (4, 8):
                figures = drafted_rounds(generator, prompt, k, rounds, f"{label} {name}")
                print(f"| {name} | {label} | {agree:.0%} | {k} | {figures} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the bundles here")
    parser.add_argument("--no-draft", action="store_true", help="skip the draft-bundle part")
    parser.add_argument("--no-lookup", action="store_true", help="skip the prompt-lookup part")
    parser.add_argument(
        "--trained", nargs=2, type=Path, metavar=("TARGET", "DRAFT"), help="measure only this trained pair"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        if args.trained:
            bench_trained(*args.trained, root, args.rounds)
            return
        if not args.no_lookup:
            for size in args.models:
                bench_model(size, root, args.rounds)
        if not args.no_draft:
            bench_draft(root, args.rounds)


if __name__ == "__main__":
    main()
