"""int4 settings against int8 and fp32: MatMulNBits' bits, accuracy level and block size, decode tok/s.

The small (~124M) LLaMA-style model (random weights) exported with ``--target ort`` in fp32, then
quantized from that graph: int8 as ``nima export --target ort --quantize int8`` does (8-bit
`MatMulNBits`) and as it does for the portable target (MatMulInteger), and int4 with
onnxruntime's `MatMulNBitsQuantizer` at accuracy level 0 (weights dequantized to fp32 in the kernel)
and 4 (activations quantized to int8, int8 multiplies), blocks of 32, 64 and 128, and the same
op with 8-bit weights in blocks of 32 (llama.cpp's Q8_0 layout; ``--quantize int8`` takes 128). Each bundle
decodes 64 greedy tokens after a 32-token prompt, bundles taking turns in every round; median tok/s.
`--agreement RUN`: also export a trained model folder with each int4 setting and with both int8 forms,
and print the export check's figures.

    .venv/bin/python bench/int4.py [--rounds 5] [--keep DIR] [--agreement runs/shakespeare-char]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from _harness import PROMPT_TOKENS, log
from _models import SIZES, export_model

import nima.export.quantize as quantize
from nima.runtime import Generator

# (bits, accuracy level, block size)
SETTINGS = [(4, 0, 32), (4, 0, 128), (4, 4, 32), (4, 4, 64), (4, 4, 128), (8, 4, 32)]


def nbits(source: Path, target: Path, bits: int, level: int, block: int) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=bits, block_size=block, is_symmetric=True, accuracy_level=level
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), False)


def variant(bundle: Path, out: Path, make) -> Path:  # noqa: ANN001
    """A copy of ``bundle`` whose graph ``make(source, target)`` rewrote."""
    if not (out / "model.onnx").is_file():
        shutil.copytree(bundle, out, dirs_exist_ok=True)
        (out / "model.onnx").unlink()
        (out / "model.onnx.data").unlink(missing_ok=True)  # the fp32 weights beside the graph
        make(bundle / "model.onnx", out / "model.onnx")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the bundles here")
    parser.add_argument("--agreement", type=Path, help="a trained model folder to check each int4 setting on")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        base = root / "small" / "bundle"
        if not (base / "model.onnx").is_file():
            log("small: build + export (ort target, fp32)")
            export_model({**SIZES["small"], "max_seq_len": 512}, root / "small", target="ort", verify=False, force=True)
        bundles = {"fp32": base}
        log("quantizing")
        bundles["int8"] = variant(base, root / "int8", lambda s, t: quantize._quantize(s, t, "int8", False, True))
        bundles["int8, standard ops (portable target)"] = variant(
            base, root / "int8-portable", lambda s, t: quantize._quantize(s, t, "int8", False)
        )
        for bits, level, block in SETTINGS:
            name = f"MatMulNBits {bits}-bit, level {level}, block {block}"
            bundles[name] = variant(
                base,
                root / f"int{bits}-l{level}-b{block}",
                lambda s, t, n=bits, a=level, b=block: nbits(s, t, n, a, b),
            )
        generators = {name: Generator(path, threads=2) for name, path in bundles.items()}
        prompt = np.random.default_rng(0).integers(0, 32000, PROMPT_TOKENS).tolist()
        speeds: dict[str, list[float]] = {name: [] for name in generators}
        for r in range(args.rounds):
            log(f"round {r + 1}")
            names = list(generators) if r % 2 == 0 else list(reversed(generators))
            for name in names:
                stream = generators[name].stream_tokens(prompt, max_new_tokens=65, min_new_tokens=65, do_sample=False)
                next(stream)
                start = time.perf_counter()
                count = sum(1 for _ in stream)
                speeds[name].append(count / (time.perf_counter() - start))
        int8 = statistics.median(speeds["int8"])
        print(f"\n124M LLaMA-style `ort` bundle, greedy, median of {args.rounds} rounds\n")
        print("| graph | tok/s | / int8 | model.onnx (+ .data) MB |")
        print("|---|---:|---:|---:|")
        for name, values in speeds.items():
            files = (bundles[name] / "model.onnx", bundles[name] / "model.onnx.data")
            size = sum(f.stat().st_size for f in files if f.is_file()) / 1e6
            print(
                f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / int8:.2f}x | {size:.0f} |"
            )
        if args.agreement:
            print("\n| setting | export check on the trained model |\n|---|---|")
            from nima.export.bundle import export_bundle

            for target in ("ort", "portable"):
                out = root / f"agreement-int8-{target}"
                export_bundle(args.agreement, out, quantize="int8", target=target, force=True)
                print(f"| int8, {target} target | {json.loads((out / 'bundle.json').read_text())['parity']} |")

            for bits, level, block in SETTINGS:
                if bits != 4:
                    continue
                quantize.ACCURACY_LEVEL, quantize.INT4_BLOCK = level, block
                out = root / f"agreement-l{level}-b{block}"
                export_bundle(args.agreement, out, quantize="int4", force=True)
                print(f"| level {level}, block {block} | {json.loads((out / 'bundle.json').read_text())['parity']} |")


if __name__ == "__main__":
    main()
