"""What following a JSON schema costs a decode step (`json_schema`, the server's ``response_format``).

The tiny (~9M, vocabulary 24,576) LLaMA-style `ort` bundle with a byte-level BPE trained on
tinyshakespeare to the model's vocabulary: greedy decoding of 128 tokens after a short prompt, free
and with a JSON schema, in interleaved rounds, 2 threads. Random weights write nothing a schema
likes, so the schema is one that keeps any model busy for 128 tokens: an array of at least 100
strings. Reported: tok/s of each (median of rounds), their per-round ratio, and the mask's own
cost per step (`RowGrammar.forbid` and `take` timed alone on the rows' own steps), against the whole
step.

    .venv/bin/python bench/structured.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _harness import NEW_TOKENS, SEED, THREADS, log
from _models import SIZES

SCHEMA = {"type": "array", "items": {"type": "string"}, "minItems": 100}  # cannot close within 128 tokens
PROMPT = "ROMEO:\nWhat say you, my lord?"


def tokenizer_for(vocab: int) -> object:
    """A byte-level BPE of up to ``vocab`` tokens trained on tinyshakespeare (first token <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    here = Path(__file__).resolve()
    text = next(p / "shared/data/tinyshakespeare.txt" for p in here.parents if (p / "shared/data").is_dir())
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(text.read_text(encoding="utf-8").splitlines(), trainer)
    return tok


def export_with_tokenizer(data: dict, tokenizer: object, folder: Path) -> Path:
    from nima.builders import build_model, save_build
    from nima.export.bundle import export_bundle
    from nima.spec import spec_from_dict

    spec = spec_from_dict(data)
    source = save_build(build_model(spec, seed=SEED).eval(), spec, folder / "model")
    tokenizer.save(str(source / "tokenizer.json"))  # type: ignore[attr-defined]
    return export_bundle(source, folder / "bundle", target="ort", verify=False).out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from nima.runtime import Generator
    from nima.runtime import grammar as grammar_module

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = SIZES["tiny"]
        tokenizer = tokenizer_for(data["vocab_size"])
        bundle = export_with_tokenizer(data, tokenizer, folder)
        generator = Generator(bundle, threads=THREADS)
        log(f"tokenizer: {tokenizer.get_vocab_size():,} tokens; model vocabulary {data['vocab_size']:,}")
        options = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "min_new_tokens": 0}
        generator.generate(PROMPT, **options)  # warm-up
        generator.generate(PROMPT, json_schema=SCHEMA, **options)  # and the schema compiled

        spent = {"forbid": 0.0, "take": 0.0}
        steps = [0]
        forbid, take = grammar_module.RowGrammar.forbid, grammar_module.RowGrammar.take

        def timed_forbid(self: object, logits: object) -> None:
            start = time.perf_counter()
            forbid(self, logits)  # type: ignore[arg-type]
            spent["forbid"] += time.perf_counter() - start
            steps[0] += 1

        def timed_take(self: object, token: int) -> None:
            start = time.perf_counter()
            take(self, token)  # type: ignore[arg-type]
            spent["take"] += time.perf_counter() - start

        free, schema, ratios = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            plain = generator.generate(PROMPT, **options)[0].completions[0]
            free.append(len(plain.token_ids) / (time.perf_counter() - start))
            grammar_module.RowGrammar.forbid, grammar_module.RowGrammar.take = timed_forbid, timed_take  # type: ignore[method-assign]
            start = time.perf_counter()
            followed = generator.generate(PROMPT, json_schema=SCHEMA, **options)[0].completions[0]
            schema.append(len(followed.token_ids) / (time.perf_counter() - start))
            grammar_module.RowGrammar.forbid, grammar_module.RowGrammar.take = forbid, take  # type: ignore[method-assign]
            ratios.append(schema[-1] / free[-1])
        step_us = 1e6 / statistics.median(schema)
        mask_us = 1e6 * spent["forbid"] / steps[0]
        take_us = 1e6 * spent["take"] / steps[0]
        print(f"\n{'':24} {'tok/s':>8}")
        print(f"{'free text':24} {statistics.median(free):8.1f}")
        print(f"{'JSON schema':24} {statistics.median(schema):8.1f}")
        spread = f"range {min(ratios):.3f}-{max(ratios):.3f}"
        print(f"schema / free, per round: median {statistics.median(ratios):.3f} ({spread})")
        print(
            f"per step with the schema: {step_us:.0f} us; the mask {mask_us:.0f} us, advancing the grammar "
            f"{take_us:.0f} us ({100 * (mask_us + take_us) / step_us:.1f}% of the step); {len(followed.token_ids)} "
            f"tokens, finish {followed.finish_reason}"
        )


if __name__ == "__main__":
    main()
