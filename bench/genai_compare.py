"""Nima's ONNX export against onnxruntime-genai's own model builder, on the same weights.

For each LLaMA-style size this script

1. builds a Nima model with seeded random weights, writes it with ``save_build`` and exports
   Nima's bundle from that folder (``export_bundle``, which checks ORT's logits against PyTorch);
2. converts the same model to ``LlamaForCausalLM`` (bench/_hf_weights.py), saves it with a
   placeholder tokenizer, and runs ``python -m onnxruntime_genai.models.builder -p fp32 -e cpu``
   on that folder (offline: it reads the folder, downloads nothing);
3. checks that every runner below produces the greedy tokens of (iii);
4. times batch-1 greedy decoding (32-token prompt, 128 new tokens, fp32, 2 threads):

   (i)    onnxruntime-genai running the genai-built graph           -- the reference
   (ii)   onnxruntime-genai running Nima's bundle (its genai_config.json)
   (iii)  a Python onnxruntime loop over Nima's model.onnx, numpy KV cache fed back each step
   (iii') the same loop with OrtValues passed back (``run_with_ort_values``: no numpy round trip)
   (iv)   the same OrtValue loop over the genai-built graph, which separates what the graph costs
          from what the genai runtime adds (an extra row, not a deployment path)

   reporting decode tokens/s (the 127 single-token steps after the first token) and time to
   first token (prompt in, first token chosen), each the median of 3 runs after a short warm-up
   run, and each as a ratio to (i). The runners take turns (round 1 runs each once, then round 2,
   ...), so other load on the machine falls on all of them alike; half the rounds run with the
   sessions created in the reverse order (the order moves their speed; `time_balanced`); the
   report gives each runner's spread and the share of the CPUs other processes took, to show how
   far to trust a figure;
5. times one decode step of each graph alone (1 new token after 128 cached; the graphs take
   turns in blocks of consecutive steps, half the rounds on sessions created in reverse order;
   median and 10th percentile), the graph-against-graph
   figure that depends least on the runtime around it and on other load on the machine;
6. counts the graph nodes by op type, as exported and after ONNX Runtime's own CPU graph
   optimisations (what a session actually executes).

The runners are in bench/_genai.py and bench/_ort_loops.py, the interleaved timing in
bench/_harness.py, the single-step and op-count figures in bench/_graphs.py.

Run it from the repository root; ``--keep DIR`` keeps the models, bundles and optimised graphs::

    .venv/bin/python bench/genai_compare.py [--sizes tiny small] [--nima-target ort] [--keep /tmp/genai-compare]

Needs ``transformers`` (for the HF model and the genai builder) besides Nima's own dependencies.
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import _graphs
import _harness
import numpy as np
import onnxruntime as ort
import onnxruntime_genai as og
import torch
from _genai import genai_runner, run_genai_builder, save_hf
from _graphs import op_counts, ort_optimised, print_op_table, print_step_figures, step_latency
from _harness import NEW_TOKENS, PROMPT_TOKENS, SEED, log, pin_genai_config, time_balanced, unused_token
from _models import SIZES
from _ort_loops import ort_numpy_runner, ort_ortvalue_runner

from nima.builders import build_model, save_build
from nima.export.bundle import export_bundle
from nima.spec import spec_from_dict


def bench_size(size: str, root: Path, nima_target: str) -> None:
    """Build, export both ways, check tokens, time the runners and print the tables for one size."""
    work = root / size
    work.mkdir(parents=True, exist_ok=True)
    data = {**SIZES[size], "generation": {"do_sample": False}}
    spec = spec_from_dict(data)
    log(f"{size}: building the Nima model (seed {SEED})")
    model = build_model(spec, seed=SEED).eval()
    params = sum(p.numel() for p in model.parameters())
    prompt = np.random.default_rng(SEED).integers(0, spec.vocab_size, PROMPT_TOKENS).tolist()

    log(f"{size}: save_build + export_bundle (Nima, target {nima_target})")
    nima_dir = save_build(model, spec, work / "nima-model")
    start = time.perf_counter()
    # `target` is passed only when asked for, so the script also runs against an exporter without it
    target = {} if nima_target == "portable" else {"target": nima_target}
    exported = export_bundle(nima_dir, work / "nima-bundle", force=True, **target)
    nima_export_s = time.perf_counter() - start
    nima_bundle = exported.out
    kv = (spec.n_kv_heads, spec.head_dim)

    # The plain loop over Nima's graph (whose logits export_bundle has just checked against PyTorch)
    # gives the reference tokens, and the end-of-sequence id both genai configs get is one it never
    # produces, so no genai run stops before 128 tokens.
    runners = [ort_numpy_runner("(iii)  ORT Python loop, Nima graph, numpy", nima_bundle / "model.onnx", *kv)]
    log(f"{size}: reference tokens")
    reference = runners[0].run(prompt, NEW_TOKENS).tokens
    eos = unused_token(prompt + reference, spec.vocab_size)
    pin_genai_config(nima_bundle, eos)

    log(f"{size}: LlamaForCausalLM + onnxruntime-genai builder")
    hf_dir = save_hf(model, spec, work / "hf", eos)
    del model
    gc.collect()
    genai_dir = work / "genai-built"
    (work / "cache").mkdir(exist_ok=True)
    genai_build_s = run_genai_builder(hf_dir, genai_dir, work / "cache")
    pin_genai_config(genai_dir, eos)

    runners[0].close()
    del runners
    labels = {
        "i": "(i)    genai runtime, genai-built graph",
        "ii": "(ii)   genai runtime, Nima bundle",
        "iii": "(iii)  ORT Python loop, Nima graph, numpy",
        "iii'": "(iii') ORT Python loop, Nima graph, OrtValue",
        "iv": "(iv)   ORT Python loop, genai-built graph, OrtValue",
    }
    makers = {
        labels["i"]: lambda: genai_runner(labels["i"], genai_dir),
        labels["ii"]: lambda: genai_runner(labels["ii"], nima_bundle),
        labels["iii"]: lambda: ort_numpy_runner(labels["iii"], nima_bundle / "model.onnx", *kv),
        labels["iii'"]: lambda: ort_ortvalue_runner(labels["iii'"], nima_bundle / "model.onnx", *kv),
        labels["iv"]: lambda: ort_ortvalue_runner(labels["iv"], genai_dir / "model.onnx", *kv),
    }
    results = time_balanced(makers, prompt)

    log(f"{size}: single-step latency of the two graphs")
    steps = step_latency({"genai-built": genai_dir / "model.onnx", "Nima": nima_bundle / "model.onnx"}, *kv)

    log(f"{size}: op counts")
    opt = work / "ort-optimised"
    opt.mkdir(exist_ok=True)
    columns = {
        "genai-built": op_counts(genai_dir / "model.onnx"),
        "Nima": op_counts(nima_bundle / "model.onnx"),
        "genai-built+ORT": op_counts(ort_optimised(genai_dir / "model.onnx", opt / "genai-built.onnx")),
        "Nima+ORT": op_counts(ort_optimised(nima_bundle / "model.onnx", opt / "nima.onnx")),
    }

    parity = exported.parity
    print()
    threads = f"{_harness.THREADS} thread{'s' if _harness.THREADS != 1 else ''}"
    print(f"== {size}: {spec.name}, {params:,} parameters, fp32, batch 1, {threads}, Nima target {nima_target} ==")
    print(
        f"   d_model {spec.d_model}, {spec.n_layers} layers, {spec.attention.n_heads} q / {spec.n_kv_heads} kv heads, "
        f"swiglu {spec.ffn.hidden}, vocab {spec.vocab_size}, tied {spec.tie_embeddings}"
    )
    print(
        f"   export: Nima export_bundle {nima_export_s:.1f} s"
        + (f" (parity max |diff| {parity.max_abs_diff:.1e})" if parity else "")
        + f"; genai builder {genai_build_s:.1f} s"
    )
    runs = _harness.RUNS
    print(f"   prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} new tokens, greedy; median of {runs} interleaved rounds")
    print()
    label_w = max(len(r.label) for r in results)
    print("   greedy tokens vs (iii), whose logits export_bundle checked against PyTorch:")
    for r in results:
        if r is results[2]:
            continue
        same = r.tokens == reference
        first = next((i for i, (a, b) in enumerate(zip(r.tokens, reference, strict=False)) if a != b), None)
        print(f"     {r.label:<{label_w}}  {'identical' if same else f'DIFFER from token {first}'}")
    print()
    base = results[0]
    heads = f"{'decode tok/s':>12}  {'vs (i)':>7}  {'TTFT ms':>8}  {'vs (i)':>7}  {'spread':>6}  {'others':>6}"
    print(f"   {'runner':<{label_w}}  {heads}")
    for r in results:
        others = "n/a" if r.others is None else f"{100 * r.others:.0f}%"
        print(
            f"   {r.label:<{label_w}}  {r.decode_tps:>12.1f}  {r.decode_tps / base.decode_tps:>6.2f}x"
            f"  {r.ttft_ms:>8.1f}  {r.ttft_ms / base.ttft_ms:>6.2f}x  {100 * r.spread:>5.0f}%  {others:>6}"
        )
    print("   decode tok/s: higher is better; TTFT: lower is better; spread: (max - min) / median decode tok/s")
    print("   over the runs; others: the most CPU other processes took during one run (share of all CPUs)")
    print()
    past, block, rounds = _graphs.STEP_PAST, _graphs.STEP_BLOCK, _graphs.STEP_ROUNDS
    print(f"   one decode step, graph only (ORT, OrtValues; 1 new token after {past} cached; the graphs take")
    print(f"   turns in blocks of {block} steps, {rounds} blocks each; per-step time of a block):")
    print_step_figures(steps, "genai-built")
    print("   (x: genai-built's time / this graph's time; above 1 is faster than genai-built)")
    print()
    print("   graph nodes by op type (as exported; +ORT: after ONNX Runtime's CPU optimisations, level ALL)")
    print_op_table(columns)
    print(flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and benchmark each size in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=_harness.THREADS, help="intra-op threads of every session")
    parser.add_argument("--runs", type=int, default=_harness.RUNS, help="timed rounds; the report gives medians")
    parser.add_argument(
        "--nima-target",
        default="portable",
        help="export_bundle's target for Nima's graph: portable (standard ops, the default) or ort "
        "(GroupQueryAttention and fused norms, ONNX Runtime only)",
    )
    parser.add_argument("--step-rounds", type=int, default=_graphs.STEP_ROUNDS, help="rounds of the single-step timing")
    parser.add_argument("--keep", type=Path, help="keep models, bundles and graphs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    # module settings the sessions, the timing and the report read
    _harness.THREADS, _harness.RUNS, _graphs.STEP_ROUNDS = args.threads, args.runs, args.step_rounds
    torch.set_num_threads(_harness.THREADS)
    print(
        f"onnxruntime {ort.__version__}, onnxruntime-genai {og.__version__}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    if args.keep:
        for size in args.sizes:
            bench_size(size, args.keep, args.nima_target)
        return
    with tempfile.TemporaryDirectory(prefix="nima-genai-") as tmp:
        for size in args.sizes:
            bench_size(size, Path(tmp), args.nima_target)


if __name__ == "__main__":
    main()
