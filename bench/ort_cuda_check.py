"""Generation on ONNX Runtime's CUDA provider: the same tokens as the CPU, and the speed of each.

Needs onnxruntime-gpu with a working CUDA provider (``--provider cpu`` is a dry run of the same code
against the CPU itself, which must agree exactly):

    python bench/ort_cuda_check.py                      # a few minutes on one GPU, most of it exports
    python bench/ort_cuda_check.py --size micro         # about a minute: the smoke test's size

For a LLaMA-style model (portable fp32, ``--target ort`` fp32 and fp16) and a GPT-2-style one
(portable fp32), exported here with random weights, and a T5-style encoder-decoder (portable), it
runs each bundle through `Generator` on the CPU and on the provider and prints:

- **where it ran:** the provider ORT reports for the decoder session, and whether beam reordering
  gathers rows on the device (`nima.runtime.device_rows`) rather than through host memory;
- **agreement:** greedy tokens of a left-padded batch of three prompts, beam search (4 beams, 2
  returned) and seeded top-k sampling, provider against CPU. fp32 should agree token for token;
  fp16 runs kernels of another precision, so the share of greedy tokens equal up to the first
  difference is printed instead of a verdict;
- **speed:** batch-1 greedy decode tokens/s and time to first token, provider and CPU, and beam-4.

It exits 1 when an fp32 bundle's tokens differ, 2 when the provider cannot start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nima.builders import build_model, save_build
from nima.export.bundle import export_bundle
from nima.runtime import GenerateError, Generator
from nima.spec import spec_from_dict

# The shapes of bench/_models.py's SIZES (and a micro one for the smoke test), written out: this check
# builds its own LLaMA-, GPT-2- and T5-style models of each (`models`), not those specs.
_LLAMA = {
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm", "placement": "pre"},
    "ffn": {"kind": "swiglu"},
    "bias": False,
}
SIZES: dict[str, dict[str, Any]] = {  # d_model, layers, heads, kv heads, FFN hidden, vocabulary
    "tiny": {"d_model": 256, "n_layers": 4, "attention": {"n_heads": 4, "n_kv_heads": 2}, "vocab_size": 24576},
    "small": {"d_model": 768, "n_layers": 12, "attention": {"n_heads": 12, "n_kv_heads": 4}, "vocab_size": 32000},
    "micro": {"d_model": 64, "n_layers": 2, "attention": {"n_heads": 4, "n_kv_heads": 2}, "vocab_size": 512},
}
PROMPTS = [[5, 9, 2, 33, 17, 8, 40, 41, 7, 3], [11], [3, 60, 22, 22]]
NEW_TOKENS = 64
# every row runs the full length: random weights may choose an end token early, and a spec's empty
# eos_token_ids means "the bundle's", not "none"
LENGTH = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}


def models(size: str) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Name -> (spec, the exports to make of it: export_bundle keyword arguments)."""
    shape = SIZES[size]
    hidden = {"tiny": 688, "small": 2048, "micro": 96}[size]
    heads = {"n_heads": shape["attention"]["n_heads"]}
    llama = {**_LLAMA, **shape, "name": f"llama-{size}", "max_seq_len": 256}
    llama |= {"ffn": {"kind": "swiglu", "hidden": hidden}}
    gpt2 = {**shape, "name": f"gpt2-{size}", "max_seq_len": 256, "attention": heads}
    gpt2 |= {"ffn": {"kind": "gelu", "hidden": 4 * shape["d_model"]}, "position": {"kind": "learned"}}
    t5 = {**shape, "name": f"t5-{size}", "architecture": "encoder-decoder", "max_seq_len": 256}
    t5 |= {"position": {"kind": "relative"}, "norm": {"kind": "rmsnorm", "placement": "pre"}, "bias": False}
    t5 |= {"ffn": {"kind": "geglu", "hidden": hidden}, "attention": heads}
    return {
        "llama": (llama, [{}, {"target": "ort"}, {"target": "ort", "dtype": "fp16"}]),
        "gpt2": (gpt2, [{}]),
        "t5": (t5, [{}]),
    }


def label(options: dict[str, Any]) -> str:
    return f"{options.get('target', 'portable')} {options.get('dtype', 'fp32')}"


def agreement(a: list[int], b: list[int]) -> float:
    """The share of ``a`` equal to ``b`` up to the first difference."""
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return same / max(len(a), 1)


def outputs(gen: Generator, seq2seq: bool) -> dict[str, list[list[int]]]:
    """Greedy (padded batch), beam and sampled tokens for the fixed prompts."""
    key = "sources" if seq2seq else "prompts"
    greedy = gen.generate(**{key: PROMPTS}, do_sample=False, **LENGTH)
    beams = gen.generate(**{key: PROMPTS[:2]}, num_beams=4, num_return_sequences=2, **LENGTH)
    sampled = gen.generate(**{key: PROMPTS}, do_sample=True, top_k=20, seed=3, **LENGTH)
    return {
        "greedy": [g.token_ids for g in greedy],
        "beam": [c.token_ids for g in beams for c in g.completions],
        "sampled": [g.token_ids for g in sampled],
    }


def speed(gen: Generator, seq2seq: bool) -> tuple[float, float, float]:
    """Batch-1 greedy tokens/s after the first token, time to first token (s), beam-4 tokens/s."""
    key = "sources" if seq2seq else "prompts"
    prompt = {key: [PROMPTS[0]]}
    gen.generate(**prompt, max_new_tokens=4)  # warm-up (CUDA kernels, allocator)
    best = (0.0, float("inf"))
    for _ in range(3):
        start = time.perf_counter()
        stream = gen.stream_tokens(PROMPTS[0], do_sample=False, **LENGTH)
        next(stream)
        first = time.perf_counter() - start
        rest = sum(1 for _ in stream)
        tps = rest / (time.perf_counter() - start - first)
        best = (max(best[0], tps), min(best[1], first))
    start = time.perf_counter()
    beams = gen.generate(**prompt, num_beams=4, **LENGTH)
    beam_tps = len(beams[0].token_ids) / (time.perf_counter() - start)
    return best[0], best[1], beam_tps


def check_bundle(name: str, bundle: Path, options: dict[str, Any], provider: str, seq2seq: bool) -> bool:
    """Print one bundle's rows; False when an fp32 bundle's tokens differ between CPU and provider."""
    cpu, dev = Generator(bundle), Generator(bundle, provider=provider)
    ran_on = dev.session.session.get_providers()[0]
    on_device = dev.session.rows_on_device is not None
    expected, got = outputs(cpu, seq2seq), outputs(dev, seq2seq)
    exact = options.get("dtype", "fp32") == "fp32"
    ok = True
    print(f"\n{name} {label(options)}: decoder session on {ran_on}, beam rows gathered on the device: {on_device}")
    for kind in expected:
        same = got[kind] == expected[kind]
        ok &= same or not exact
        if same:
            print(f"   {kind:8} equal")
            continue
        shares = [agreement(a, b) for a, b in zip(got[kind], expected[kind], strict=True)]
        print(
            f"   {kind:8} {'DIFFERENT' if exact else 'differs'}: the least share of a row equal before its first"
            f" difference is {100 * min(shares):.0f}%"
        )
    for who, gen in (("cpu", cpu), (f"on {provider}", dev)):
        tps, first, beam_tps = speed(gen, seq2seq)
        print(f"   {who:8} greedy {tps:8.1f} tok/s, first token {1000 * first:6.1f} ms, beam-4 {beam_tps:7.1f} tok/s")
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--size", default="tiny", choices=list(SIZES))
    parser.add_argument("--models", nargs="+", choices=["llama", "gpt2", "t5"], default=["llama", "gpt2", "t5"])
    parser.add_argument("--keep", type=Path, help="keep the models and bundles here")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name, (data, exports) in models(args.size).items():
            if name not in args.models:
                continue
            spec = spec_from_dict({**data, "generation": {"do_sample": False}})
            source = save_build(build_model(spec, seed=0).eval(), spec, root / name / "model")
            for options in exports:
                started = time.perf_counter()
                out = root / name / label(options).replace(" ", "-")
                bundle = export_bundle(source, out, force=True, **options).out
                print(f"[{name} {label(options)}: exported and verified in {time.perf_counter() - started:.0f} s]")
                try:
                    ok &= check_bundle(name, bundle, options, args.provider, spec.architecture != "decoder")
                except GenerateError as err:
                    print(f"error: {err}", file=sys.stderr)
                    raise SystemExit(2) from None
    if not ok:
        print("fp32 tokens differ between the CPU and the provider", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
