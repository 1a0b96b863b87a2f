"""Nima's runtime against CTranslate2 and llama.cpp on the same weights, at fp32, int8 and int4.

For each size (``--sizes tiny small``: the ~9M and ~124M LLaMA-style shapes of bench/_models.py)
the script saves seeded random weights as one transformers Llama folder, and each engine converts
that folder with its own tools:

  nima        ``nima import`` then ``nima export --target ort`` (``--quantize int8`` / ``int4``)
  ctranslate2 ``ctranslate2.converters.TransformersConverter`` (``quantization=int8``; it has no
              4-bit conversion for a plain checkpoint, so its int4 column is empty)
  llama.cpp   the folder as an fp32 GGUF (bench/_gguf.py), then ``llama_model_quantize`` to Q8_0 and
              Q4_0 (llama.cpp's own rules: Q4_0 keeps the output head at Q6_K)

Every engine runs in its own process (bench/processes.py's protocol): it loads the model (the load
time is measured from the call that opens it to a model ready to run) and warms up; then in each
round every engine, in turn, decodes batch-1 greedy 128 new tokens after a 32-token prompt twice
and reports the second (2 threads each; the first puts its weights back into the caches the others
evicted). Which engine goes first rotates between rounds. "Cold first token" is the load time plus
the first generation's time to first token: llama.cpp maps its file and reads the weights only
when the first prompt runs, so its load time alone leaves that work out. At the end each process reports its peak
resident memory (VmHWM: the whole process, mapped weights included). The table gives decode tok/s
(median over rounds), Nima's per-round ratio against each engine (median and range), time to first
token, load time, peak RSS, and how many leading greedy tokens equal the fp32 run's (Nima's; in the
fp32 rows, each engine's against Nima's fp32 tokens: a wrong conversion parts at the first token,
float rounding late if at all). The weights are drawn with std 0.1, not 0.02: at 0.02 a
random model's greedy run repeats one token and equal tokens would show little; at 0.1 logits are
close together, so quantized runs part from fp32 early in every engine (a trained model's
agreement is bench/int4.py's ``--agreement``). ``--busy N`` runs N processes that spin on the CPUs
while the rounds run: a machine shared with other work.

The peers are optional: a column is skipped when its package is missing. ``pip install -e '.[peers]'``
installs CTranslate2, the GGUF writer and llama-cpp-python, which compiles llama.cpp: 2.5 minutes
on 2 cores with ``CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
-DLLAMA_BUILD_TESTS=OFF -DGGML_NATIVE=ON"`` (the library only).

    .venv/bin/python bench/peers.py [--sizes tiny small] [--widths fp32 int8 int4] [--rounds 5] [--keep DIR]
    [--busy N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _engines import CONVERTERS, OPENERS
from _harness import NEW_TOKENS, PROMPT_TOKENS, SEED, THREADS, compile_nima, log

WIDTHS = ("fp32", "int8", "int4")
ROUNDS = 5  # interleaved timed rounds per width (--rounds)
BUSY = 0  # processes spinning on the CPUs while the rounds run (--busy)
ENGINES = ("nima", "ctranslate2", "llama.cpp")
PACKAGES = {"nima": "onnxruntime", "ctranslate2": "ctranslate2", "llama.cpp": "llama_cpp"}


def child(engine: str, path: str, eos: int, vocab: int) -> None:
    """Runs in the child process: loads (timed) and warms up, prints the load time; then for each
    line read from stdin decodes twice and prints the second's figures; at the end of stdin prints
    the process's peak resident memory."""
    import numpy as np

    start = time.perf_counter()
    decode = OPENERS[engine](path, eos)
    load = time.perf_counter() - start
    prompt = np.random.default_rng(SEED).integers(0, vocab, PROMPT_TOKENS).tolist()
    _, first, _ = decode(prompt, 16)  # warm-up: allocates, picks kernels, touches every weight
    print(json.dumps({"load": load, "cold": load + first}), flush=True)
    for _ in sys.stdin:
        decode(prompt, NEW_TOKENS)  # untimed: the other engines' runs evicted this one's weights
        tokens, ttft, rest = decode(prompt, NEW_TOKENS)
        print(json.dumps({"tps": (len(tokens) - 1) / rest, "ttft": ttft, "tokens": tokens}), flush=True)
    peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    print(json.dumps({"peak": int(peak.split()[1]) / 1024}), flush=True)


class Child:
    """An engine in its own process, decoding when asked (see `child`)."""

    def __init__(self, engine: str, path: Path, eos: int, vocab: int) -> None:
        command = [sys.executable, __file__, "--child", engine, str(path), str(eos), str(vocab)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        opened = self._read()
        self.load, self.cold = opened["load"], opened["cold"]

    def _read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args[3]} process ended early (exit {self.process.wait()})")
        return json.loads(line)

    def decode(self) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> float:
        """Ends the process; its peak resident memory, MiB."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        peak = self._read()["peak"]
        self.process.wait()
        return peak


def convert(
    root: Path, size: str, engines: list[str], widths: list[str]
) -> tuple[dict[tuple[str, str], Path], int, int]:
    """The random transformers folder for ``size`` and each engine's conversion of it, by (engine,
    width); the end id (never produced greedily) and the vocabulary size."""
    from _genai import save_hf
    from _models import SIZES

    from nima.builders import build_model
    from nima.spec import spec_from_dict

    # std 0.1, not the sizes' 0.02: at 0.02 greedy decoding repeats one token, which makes equal tokens a weak check
    spec = spec_from_dict({**SIZES[size], "max_seq_len": 512, "init": {"kind": "normal", "std": 0.1}})
    hf = root / "hf"
    eos = spec.vocab_size - 1  # ends, starts and pads; a greedy run that reaches it stops the script (bench_width)
    if not (hf / "config.json").is_file():
        log(f"{size}: random transformers folder")
        save_hf(build_model(spec, seed=SEED).eval(), spec, hf, eos)
    paths: dict[tuple[str, str], Path] = {}
    for engine in engines:
        for width in widths:
            if engine == "ctranslate2" and width == "int4":
                continue
            out = root / f"{engine}-{width}"
            log(f"{size}: {engine} {width}")
            paths[engine, width] = CONVERTERS[engine](hf, out, width, eos)
    return paths, eos, spec.vocab_size


def ratio_cell(nima: list[dict], peer: list[dict]) -> str:
    """Nima / peer decode tok/s per round: median (range)."""
    ratios = [a["tps"] / b["tps"] for a, b in zip(nima, peer, strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def leading(tokens: list[int], reference: list[int]) -> str:
    """How many of ``tokens`` equal the fp32 ``reference`` before the first difference."""
    same = next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=True)) if a != b), len(tokens))
    return f"{same}/{len(tokens)}"


def bench_width(
    size: str, width: str, paths: dict[tuple[str, str], Path], ids: tuple[int, int], reference: list[int] | None
) -> list[int] | None:
    """One table block: every engine with a model at ``width``, in interleaved rounds; ``ids`` are the
    end id and the vocabulary size, ``reference`` the fp32 greedy tokens. Returns Nima's tokens."""
    engines = [e for e in ENGINES if (e, width) in paths]
    children = {e: Child(e, paths[e, width], *ids) for e in engines}
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY)]
    try:
        for r in range(ROUNDS):
            log(f"{size} {width}: round {r + 1}/{ROUNDS}")
            for turn in range(len(engines)):
                engine = engines[(r + turn) % len(engines)]
                runs[engine].append(children[engine].decode())
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    peaks = {e: c.close() for e, c in children.items()}
    first = runs[engines[0]][0]["tokens"]  # Nima's, where it ran: the fp32 rows' reference
    for engine in engines:
        tokens = runs[engine][0]["tokens"]
        if ids[0] in tokens or any(run["tokens"] != tokens for run in runs[engine]):
            raise RuntimeError(f"{engine} {width}: greedy tokens reached the end id or differ between rounds")
        ratio = ratio_cell(runs["nima"], runs[engine]) if engine != "nima" and "nima" in runs else "-"
        tps = statistics.median(run["tps"] for run in runs[engine])
        ttft = 1e3 * statistics.median(run["ttft"] for run in runs[engine])
        opened = children[engine]
        print(
            f"| {size} | {width} | {engine} | {tps:.1f} | {ratio} | {ttft:.1f} | {opened.load:.2f} | "
            f"{opened.cold:.2f} | {peaks[engine]:.0f} | {leading(tokens, reference or first)} |",
            flush=True,
        )
    return runs[engines[0]][0]["tokens"] if engines else None


def main(argv: list[str] | None = None) -> None:
    global ROUNDS, BUSY  # bench_width reads them
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    parser.add_argument("--widths", nargs="+", default=list(WIDTHS), choices=WIDTHS)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved timed rounds per width")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the folders and converted models here")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the CPUs during the rounds")
    args = parser.parse_args(argv)
    ROUNDS, BUSY = args.rounds, args.busy
    compile_nima()  # each load is timed in a fresh process: as installed, not compiling Nima's source
    engines = [e for e in ENGINES if importlib.util.find_spec(PACKAGES[e]) is not None]
    missing = sorted(set(ENGINES) - set(engines))
    if missing:
        log(f"not installed, skipped: {', '.join(missing)}")
    print(
        f"# Batch-1 greedy decoding, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, {THREADS} threads, "
        f"one process per engine, {args.rounds} interleaved rounds, {args.busy} busy processes beside\n\n"
        "| size | width | engine | decode tok/s | Nima / engine per round | TTFT ms | load s | cold first token s | "
        "peak RSS MiB | leading tokens as fp32 |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="nima-peers-") as scratch:
        for size in args.sizes:
            root = (args.keep or Path(scratch)) / size
            root.mkdir(parents=True, exist_ok=True)
            paths, eos, vocab = convert(root, size, engines, args.widths)
            reference = None
            for width in args.widths:
                tokens = bench_width(size, width, paths, (eos, vocab), reference)
                reference = tokens if width == "fp32" else reference


if __name__ == "__main__":
    main()
