"""`nima import` of a ~124M Hugging Face folder: its time and peak memory, and the imported model's decode
speed against onnxruntime-genai's own builder on the same folder.

    cd bench && ../.venv/bin/python import.py [--models llama-small gpt2-small] [--runs 6]

For each model: seeded random weights saved as a transformers folder (`_genai.save_hf`); `nima
import` in a child process, timed, with its peak resident memory (``ru_maxrss``) against the
same child that only loads Nima, torch and safetensors (the baseline), so that the figure above
the baseline, divided by the weights' bytes, is what importing held; then the import exported
with ``--target ort`` and decoded greedily by Nima's runtime and, where the builder takes the
architecture (Llama; it refuses GPT-2), by onnxruntime-genai on the graph its builder makes from
the same folder, the two interleaved (`time_balanced`), their tokens compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness
from _genai import genai_runner, run_genai_builder, save_hf
from _harness import NEW_TOKENS, PROMPT_TOKENS, SEED, log, pin_genai_config, time_balanced, unused_token
from _models import MODELS
from _nima import nima_runner

from nima.builders import build_model
from nima.spec import spec_from_dict

CHILD = """
import sys, time
from pathlib import Path
start = time.perf_counter()
import torch, safetensors  # noqa: F401 - what any import loads
from nima.interop.hf.importer import import_hf
if sys.argv[1] == "import":
    import_hf(Path(sys.argv[2]), Path(sys.argv[3]))
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(time.perf_counter() - start, peak.split()[1])
"""


def child(*args: str) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a fresh process that loads the importer and, with "import", imports
    (Linux: the peak is /proc/self/status's VmHWM)."""
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    seconds, peak_kib = done.stdout.split()[-2:]
    return float(seconds), int(peak_kib) / 1024


def measure_import(hf: Path, out: Path) -> dict[str, float]:
    """The import's wall time and peak RSS, and the baseline process's."""
    base_s, base_mib = child("baseline")
    import_s, import_mib = child("import", str(hf), str(out))
    weights = (out / "model.safetensors").stat().st_size / 2**20
    return {
        "seconds": import_s - base_s,
        "peak MiB": import_mib,
        "baseline MiB": base_mib,
        "weights MiB": weights,
        "(peak - baseline) / weights": (import_mib - base_mib) / weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["llama-small", "gpt2-small"], choices=sorted(MODELS))
    parser.add_argument("--runs", type=int, default=_harness.RUNS, help="Timed rounds (half in each creation order).")
    args = parser.parse_args()
    _harness.RUNS = args.runs
    from nima.export.bundle import export_bundle

    print(f"# nima import, {_harness.THREADS} threads, {args.runs} rounds, prompt {PROMPT_TOKENS}, new {NEW_TOKENS}\n")
    for name in args.models:
        spec = spec_from_dict(MODELS[name])
        with tempfile.TemporaryDirectory(prefix="nima-import-bench-") as scratch:
            root = Path(scratch)
            prompt = [int(t) for t in range(7, 7 + PROMPT_TOKENS)]
            eos = unused_token(prompt, spec.vocab_size)
            log(f"{name}: a random transformers folder")
            hf = save_hf(build_model(spec, seed=SEED).eval(), spec, root / "hf", eos)
            log(f"{name}: nima import")
            figures = measure_import(hf, root / "nima")
            print(f"## {name}: import\n\n" + json.dumps({k: round(v, 2) for k, v in figures.items()}, indent=1))
            bundle = export_bundle(root / "nima", root / "bundle", target="ort").out
            pin_genai_config(bundle, eos)
            makers = {"nima": lambda b=bundle: nima_runner("nima", b)}
            if MODELS[name]["position"]["kind"] == "rope":  # the builder takes Llama, not GPT-2
                log(f"{name}: onnxruntime-genai's builder")
                start = time.perf_counter()
                run_genai_builder(hf, root / "genai", root / "cache")
                log(f"builder: {time.perf_counter() - start:.1f} s")
                pin_genai_config(root / "genai", eos)
                makers["genai builder"] = lambda g=root / "genai": genai_runner("genai builder", g)
            results = {r.label: r for r in time_balanced(makers, prompt)}
            print("\n| runner | decode tok/s | TTFT ms | new tokens |\n|---|---:|---:|---:|")
            for r in results.values():
                print(f"| {r.label} | {r.decode_tps:.1f} | {r.ttft_ms:.1f} | {len(r.tokens)} |")
            if "genai builder" in results:
                nima, genai = results["nima"], results["genai builder"]
                paired = [a.decode_tps / b.decode_tps for a, b in zip(nima.runs, genai.runs, strict=True)]
                same = "same tokens" if nima.tokens == genai.tokens else "DIFFERENT tokens"
                print(
                    f"\nnima / genai builder, per round: median {statistics.median(paired):.3f}x "
                    f"(range {min(paired):.3f}-{max(paired):.3f}, faster in {sum(p > 1 for p in paired)} of "
                    f"{len(paired)}); {same}\n"
                )


if __name__ == "__main__":
    main()
