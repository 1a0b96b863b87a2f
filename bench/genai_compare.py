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

Run it from the repository root; ``--keep DIR`` keeps the models, bundles and optimised graphs::

    .venv/bin/python bench/genai_compare.py [--sizes tiny small] [--nima-target ort] [--keep /tmp/genai-compare]

Needs ``transformers`` (for the HF model and the genai builder) besides Nima's own dependencies.
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_genai as og
import torch
from _hf_weights import to_hf
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from nima.builders import build_model, save_build
from nima.export.bundle import export_bundle
from nima.spec import spec_from_dict

PROMPT_TOKENS = 32
NEW_TOKENS = 128
WARMUP_TOKENS = 16  # the warm-up run: enough to allocate, pick kernels and touch every weight
THREADS = 2
RUNS = 3
SEED = 0

_LLAMA: dict[str, Any] = {
    "architecture": "decoder",
    "max_seq_len": 2048,
    "position": {"kind": "rope", "theta": 10000.0},
    "norm": {"kind": "rmsnorm", "placement": "pre", "eps": 1e-6},
    "bias": False,
    "init": {"kind": "normal", "std": 0.02},
}
SIZES: dict[str, dict[str, Any]] = {
    # ~9.2M parameters: the tiny preset's shape, LLaMA style, tied head
    "tiny": {
        **_LLAMA,
        "name": "bench-tiny",
        "vocab_size": 24576,
        "d_model": 256,
        "n_layers": 4,
        "attention": {"n_heads": 4, "n_kv_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 688},
        "tie_embeddings": True,
    },
    # ~124.7M parameters: specs/llama-style.yaml, untied head
    "small": {
        **_LLAMA,
        "name": "bench-small",
        "vocab_size": 32000,
        "d_model": 768,
        "n_layers": 12,
        "attention": {"n_heads": 12, "n_kv_heads": 4},
        "ffn": {"kind": "swiglu", "hidden": 2048},
        "tie_embeddings": False,
    },
}

# Fused and contrib ops (from genai's builder, Nima's `ort` target or ORT's own session optimisations),
# each standing for a subgraph of standard ops; the op table lists them first.
FUSED_OPS = (
    "GroupQueryAttention",
    "MultiHeadAttention",
    "Attention",
    "RotaryEmbedding",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "FusedMatMul",
    "MatMulNBits",
    "QuickGelu",
    "BiasGelu",
    "FastGelu",
)


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- models ---------------------------------------------------------------------------------------


def unused_token(tokens: list[int], vocab: int) -> int:
    """The smallest id greedy decoding never produces: the end-of-sequence id, so no run stops early."""
    used = set(tokens)
    return next(t for t in range(vocab) if t not in used)


def save_placeholder_tokenizer(folder: Path, vocab: int, eos: int) -> None:
    """A word-level tokenizer ``t0 .. t{vocab-1}``: the genai builder insists on one; runs feed ids."""
    table = {f"t{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(table, unk_token=f"t{eos}"))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=f"t{eos}", eos_token=f"t{eos}", bos_token=f"t{eos}", pad_token=f"t{eos}"
    )
    fast.save_pretrained(str(folder))


def run_genai_builder(hf_dir: Path, out: Path, cache: Path) -> float:
    """onnxruntime-genai's builder, fp32 for the CPU, offline; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder"]
    cmd += ["-i", str(hf_dir), "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(cache)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cache.parent, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"genai builder failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return time.perf_counter() - start


def pin_genai_config(folder: Path, eos: int) -> None:
    """Same search and thread settings on both genai configs: greedy, 2 intra-op threads, our eos."""
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    config["model"]["eos_token_id"] = eos
    session = config["model"]["decoder"].setdefault("session_options", {})
    session["intra_op_num_threads"] = THREADS
    session["inter_op_num_threads"] = 1
    config["search"]["do_sample"] = False
    config["search"]["max_length"] = PROMPT_TOKENS + NEW_TOKENS
    path.write_text(json.dumps(config, indent=2) + "\n")


# --- runners --------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One generation: the new tokens, time to first token and total time (seconds)."""

    tokens: list[int]
    ttft: float
    total: float
    others: float | None = None  # share of the machine's CPU time other processes used meanwhile

    @property
    def decode_tps(self) -> float:
        """Tokens per second after the first: each of these costs one single-token model run."""
        return (len(self.tokens) - 1) / (self.total - self.ttft)


@dataclass
class Result:
    """A runner's median figures over the timed runs."""

    label: str
    tokens: list[int]
    decode_tps: float
    ttft_ms: float
    runs: list[Timing] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median decode tokens/s over the timed runs: how noisy the figure is."""
        tps = [t.decode_tps for t in self.runs]
        return (max(tps) - min(tps)) / self.decode_tps

    @property
    def others(self) -> float | None:
        """The largest share of the CPUs that other processes took during a timed run."""
        shares = [t.others for t in self.runs if t.others is not None]
        return max(shares) if shares else None


@dataclass
class Runner:
    """A loaded model and how to generate with it; ``close`` releases the session."""

    label: str
    run: Callable[[list[int], int], Timing]
    close: Callable[[], None]


def genai_runner(label: str, folder: Path) -> Runner:
    """Greedy decoding through onnxruntime-genai with the folder's genai_config.json."""
    model = og.Model(str(folder))

    def run(prompt: list[int], new_tokens: int) -> Timing:
        start = time.perf_counter()
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.array([prompt], dtype=np.int32))  # runs the prompt
        generator.generate_next_token()  # picks the first token from the prompt's logits
        ttft = time.perf_counter() - start
        while not generator.is_done():
            generator.generate_next_token()  # runs the last token, picks the next
        total = time.perf_counter() - start
        seq = [int(t) for t in generator.get_sequence(0)]
        return Timing(seq[len(prompt) :], ttft, total)

    def close() -> None:
        nonlocal model
        del model

    return Runner(label, run, close)


def _session(path: Path, spin: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _kv_inputs(session: ort.InferenceSession, kv_heads: int, head_dim: int) -> list[tuple[str, tuple[int, ...]]]:
    """The past key/value inputs, each with its empty first-step shape (1, kv_heads, 0, head_dim)."""
    names = [meta.name for meta in session.get_inputs() if meta.name.startswith("past_key_values.")]
    return [(name, (1, kv_heads, 0, head_dim)) for name in names]


def ort_numpy_runner(label: str, path: Path, kv_heads: int, head_dim: int) -> Runner:
    """A Python loop over ``session.run``: numpy in, numpy out, the presents fed back as the pasts."""
    session = _session(path)
    kv = _kv_inputs(session, kv_heads, head_dim)
    names = [o.name for o in session.get_outputs()]
    has_positions = any(i.name == "position_ids" for i in session.get_inputs())

    def run(prompt: list[int], new_tokens: int) -> Timing:
        start = time.perf_counter()
        ids = np.array([prompt], dtype=np.int64)
        past = {name: np.zeros(dims, np.float32) for name, dims in kv}
        seen = 0
        tokens: list[int] = []
        ttft = 0.0
        for step in range(new_tokens):
            n = ids.shape[1]
            feed = {"input_ids": ids, "attention_mask": np.ones((1, seen + n), np.int64), **past}
            if has_positions:
                feed["position_ids"] = np.arange(seen, seen + n, dtype=np.int64)[None]
            outputs = session.run(names, feed)
            nxt = int(outputs[0][0, -1].argmax())
            tokens.append(nxt)
            if step == 0:
                ttft = time.perf_counter() - start
            past = {
                name.replace("present.", "past_key_values."): v for name, v in zip(names[1:], outputs[1:], strict=True)
            }
            seen += n
            ids = np.array([[nxt]], dtype=np.int64)
        return Timing(tokens, ttft, time.perf_counter() - start)

    def close() -> None:
        nonlocal session
        del session

    return Runner(label, run, close)


def ort_ortvalue_runner(label: str, path: Path, kv_heads: int, head_dim: int) -> Runner:
    """As `ort_numpy_runner`, but the presents stay OrtValues and go straight back in."""
    session = _session(path)
    kv = _kv_inputs(session, kv_heads, head_dim)
    names = [o.name for o in session.get_outputs()]
    past_names = [name.replace("present.", "past_key_values.") for name in names[1:]]
    has_positions = any(i.name == "position_ids" for i in session.get_inputs())
    run_options = ort.RunOptions()
    value = ort.OrtValue.ortvalue_from_numpy

    def run(prompt: list[int], new_tokens: int) -> Timing:
        start = time.perf_counter()
        ids = np.array([prompt], dtype=np.int64)
        past = {name: value(np.zeros(dims, np.float32)) for name, dims in kv}
        seen = 0
        tokens: list[int] = []
        ttft = 0.0
        for step in range(new_tokens):
            n = ids.shape[1]
            feed = {"input_ids": value(ids), "attention_mask": value(np.ones((1, seen + n), np.int64)), **past}
            if has_positions:
                feed["position_ids"] = value(np.arange(seen, seen + n, dtype=np.int64)[None])
            outputs = session.run_with_ort_values(names, feed, run_options)
            nxt = int(outputs[0].numpy()[0, -1].argmax())
            tokens.append(nxt)
            if step == 0:
                ttft = time.perf_counter() - start
            past = dict(zip(past_names, outputs[1:], strict=True))
            seen += n
            ids = np.array([[nxt]], dtype=np.int64)
        return Timing(tokens, ttft, time.perf_counter() - start)

    def close() -> None:
        nonlocal session
        del session

    return Runner(label, run, close)


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(runner: Runner, prompt: list[int]) -> Timing:
    """One full generation, with the share of the CPUs other processes took meanwhile."""
    busy, own, wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    timing = runner.run(prompt, NEW_TOKENS)
    busy_after = busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        theirs = (busy_after - busy) - (time.process_time() - own)
        timing.others = max(0.0, theirs) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))
    return timing


def time_all(runners: list[Runner], prompt: list[int]) -> list[Result]:
    """A short warm-up run each, then `RUNS` rounds that run every runner once, in rotating order.

    Interleaving the runners, rather than timing one after the other, spreads whatever else the
    machine does over all of them alike; the medians then compare like with like.
    """
    for runner in runners:
        log(f"warm-up {runner.label}")
        runner.run(prompt, WARMUP_TOKENS)  # first-run allocations, kernel selection, weights paged in
    timings: dict[str, list[Timing]] = {r.label: [] for r in runners}
    for round_ in range(RUNS):
        log(f"timed round {round_ + 1}/{RUNS}")
        for turn in range(len(runners)):  # a different runner first in each round
            runner = runners[(round_ + turn) % len(runners)]
            timings[runner.label].append(timed(runner, prompt))
    results = []
    for label, runs in timings.items():
        if any(t.tokens != runs[0].tokens for t in runs):
            raise RuntimeError(f"{label}: greedy tokens differ between runs")
        results.append(
            Result(
                label=label,
                tokens=runs[0].tokens,
                decode_tps=statistics.median(t.decode_tps for t in runs),
                ttft_ms=1000 * statistics.median(t.ttft for t in runs),
                runs=runs,
            )
        )
    return results


def time_balanced(makers: dict[str, Callable[[], Runner]], prompt: list[int]) -> list[Result]:
    """`time_all` over half the rounds with the runners created in the given order, half with them
    created in reverse order, fresh each time; the rounds are then pooled.

    The order in which sessions are created moves their speed: with Nima's and genai's sessions
    in one process, the one created second decoded about 5% faster at 124M parameters (three
    pairs of processes each way: Nima / genai 0.948-0.979x created first, 1.002-1.027x second).
    Balancing the order keeps that out of the ratios."""
    global RUNS  # time_all reads it
    total = RUNS
    halves = [(list(makers), (total + 1) // 2), (list(reversed(makers)), total // 2)]
    pooled: dict[str, list[Timing]] = {label: [] for label in makers}
    for order, rounds in halves:
        if rounds == 0:
            continue
        runners = [makers[label]() for label in order]
        RUNS = rounds
        try:
            for result in time_all(runners, prompt):
                pooled[result.label] += result.runs
        finally:
            RUNS = total
            for runner in runners:
                runner.close()
            del runners
            gc.collect()  # the sessions' weights go before the next half's are loaded
    results = []
    for label, runs in pooled.items():
        if any(t.tokens != runs[0].tokens for t in runs):
            raise RuntimeError(f"{label}: greedy tokens differ between runs")
        decode = statistics.median(t.decode_tps for t in runs)
        ttft = 1000 * statistics.median(t.ttft for t in runs)
        results.append(Result(label=label, tokens=runs[0].tokens, decode_tps=decode, ttft_ms=ttft, runs=runs))
    return results


# --- graphs ---------------------------------------------------------------------------------------
STEP_PAST = 128  # cached tokens before the timed single-token steps
STEP_ROUNDS = 60  # rounds; in each, every graph runs one block of steps
STEP_BLOCK = 10  # consecutive timed steps per block, after one untimed step


def step_latency(paths: dict[str, Path], kv_heads: int, head_dim: int) -> dict[str, list[float]]:
    """Per-step ms of each round's block of decode steps, per graph: one new token after `STEP_PAST` cached.

    Each round runs every graph for a block of consecutive steps, as generation does (a graph
    run right after another model finds its weights out of the CPU caches; the untimed first
    step of a block absorbs that), starting with a different graph each round, so order and
    other load on the machine fall on all alike. Sessions do not spin-wait between calls:
    a spinning idle session would take a core from the one being timed. The cache is random: a
    step's cost does not depend on its values.

    The order in which sessions are created moves their speed by several percent (which one
    gains changed with the model's size here; bench/decode.py's `time_balanced`), so half the
    rounds run on sessions created in the order of ``paths`` and half on fresh ones created in
    the reverse order. The returned blocks are in round order, first half first, so the same
    index is the same round for every graph.
    """
    labels = list(paths)
    blocks: dict[str, list[float]] = {label: [] for label in labels}
    halves = [(labels, (STEP_ROUNDS + 1) // 2), (labels[::-1], STEP_ROUNDS // 2)]
    for order, rounds in halves:
        runs = [(label, *_step_feed(paths[label], kv_heads, head_dim)) for label in order]
        _time_blocks(runs, rounds, blocks)
        del runs
        gc.collect()  # the sessions' weights go before the next half's are loaded
    return blocks


def _step_feed(
    path: Path, kv_heads: int, head_dim: int
) -> tuple[ort.InferenceSession, dict[str, ort.OrtValue], list[str]]:
    """A non-spinning session of ``path``, its inputs for one step after `STEP_PAST` random cached
    positions, and its output names."""
    rng = np.random.default_rng(SEED)
    value = ort.OrtValue.ortvalue_from_numpy
    session = _session(path, spin=False)
    feed = {
        "input_ids": value(np.array([[7]], np.int64)),
        "attention_mask": value(np.ones((1, STEP_PAST + 1), np.int64)),
    }
    if any(i.name == "position_ids" for i in session.get_inputs()):
        feed["position_ids"] = value(np.array([[STEP_PAST]], np.int64))
    for name, _ in _kv_inputs(session, kv_heads, head_dim):
        cache = rng.standard_normal((1, kv_heads, STEP_PAST, head_dim)).astype(np.float32)
        feed[name] = value(cache)
    return session, feed, [o.name for o in session.get_outputs()]


StepRun = tuple[str, ort.InferenceSession, dict[str, ort.OrtValue], list[str]]  # label, session, feed, outputs


def _time_blocks(runs: list[StepRun], rounds: int, blocks: dict[str, list[float]]) -> None:
    """``rounds`` rounds of one timed block per graph, a different graph first in each round."""
    options = ort.RunOptions()
    for round_ in range(rounds):
        for turn in range(len(runs)):
            label, session, feed, names = runs[(round_ + turn) % len(runs)]
            session.run_with_ort_values(names, feed, options)
            start = time.perf_counter()
            for _ in range(STEP_BLOCK):
                session.run_with_ort_values(names, feed, options)
            blocks[label].append(1000 * (time.perf_counter() - start) / STEP_BLOCK)


def print_step_figures(steps: dict[str, list[float]], base_label: str) -> None:
    """Each graph's median and 10th percentile block, and its per-round ratio to ``base_label``'s.

    The paired ratio compares blocks run back to back in the same round, so a change in the
    machine's speed between rounds (other tenants) cancels; it is the figure to read here.
    """
    base = np.array(steps[base_label])
    for label, spent in steps.items():
        times = np.array(spent)
        line = (
            f"     {label:<12}  median {np.median(times):7.2f} ms ({np.median(base) / np.median(times):.2f}x)"
            f"   10th percentile {np.percentile(times, 10):7.2f} ms"
            f" ({np.percentile(base, 10) / np.percentile(times, 10):.2f}x)"
        )
        if label != base_label:
            ratio = base / times
            low, high = np.percentile(ratio, [25, 75])
            line += (
                f"\n     {'':<12}  per-round ratio: median {np.median(ratio):.3f}x, middle half {low:.3f}-{high:.3f}x,"
                f" faster in {int((ratio > 1).sum())} of {len(ratio)} rounds"
            )
        print(line)


def op_counts(path: Path) -> Counter[str]:
    """Nodes by op type (the main graph; weights are not loaded)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


def ort_optimised(path: Path, out: Path) -> Path:
    """The graph a CPU session runs after ONNX Runtime's own optimisations (level ALL), saved to ``out``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    options.optimized_model_filepath = str(out)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return out


def print_op_table(columns: dict[str, Counter[str]]) -> None:
    """Op types as rows, graphs as columns; fused ops first, then by the largest count."""
    ops = set().union(*columns.values())
    order = sorted(ops, key=lambda op: (op not in FUSED_OPS, -max(c[op] for c in columns.values()), op))
    heads = list(columns)
    width = max(len("op type"), *(len(op) for op in ops))
    print(f"  {'op type':<{width}}  " + "  ".join(f"{h:>{max(len(h), 6)}}" for h in heads))
    for op in order:
        mark = "*" if op in FUSED_OPS else " "
        cells = "  ".join(f"{columns[h][op] or '-':>{max(len(h), 6)}}" for h in heads)
        print(f"{mark} {op:<{width}}  {cells}")
    totals = "  ".join(f"{sum(columns[h].values()):>{max(len(h), 6)}}" for h in heads)
    print(f"  {'total nodes':<{width}}  {totals}")
    print("  (* fused or contrib op)")


# --- one size -------------------------------------------------------------------------------------


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
    hf_dir = work / "hf"
    hf = to_hf(model, spec)
    hf.config.eos_token_id = hf.config.bos_token_id = hf.config.pad_token_id = eos
    hf.generation_config.eos_token_id = hf.generation_config.bos_token_id = eos
    hf.generation_config.pad_token_id = eos
    hf.save_pretrained(str(hf_dir))
    save_placeholder_tokenizer(hf_dir, spec.vocab_size, eos)
    del hf, model
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
    threads = f"{THREADS} thread{'s' if THREADS != 1 else ''}"
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
    print(f"   prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} new tokens, greedy; median of {RUNS} interleaved rounds")
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
    print(f"   one decode step, graph only (ORT, OrtValues; 1 new token after {STEP_PAST} cached; the graphs take")
    print(f"   turns in blocks of {STEP_BLOCK} steps, {STEP_ROUNDS} blocks each; per-step time of a block):")
    print_step_figures(steps, "genai-built")
    print("   (x: genai-built's time / this graph's time; above 1 is faster than genai-built)")
    print()
    print("   graph nodes by op type (as exported; +ORT: after ONNX Runtime's CPU optimisations, level ALL)")
    print_op_table(columns)
    print(flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and benchmark each size in turn."""
    global THREADS, RUNS, STEP_ROUNDS  # module settings the sessions and the report read
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=THREADS, help="intra-op threads of every session")
    parser.add_argument("--runs", type=int, default=RUNS, help="timed rounds; the report gives medians")
    parser.add_argument(
        "--nima-target",
        default="portable",
        help="export_bundle's target for Nima's graph: portable (standard ops, the default) or ort "
        "(GroupQueryAttention and fused norms, ONNX Runtime only)",
    )
    parser.add_argument("--step-rounds", type=int, default=STEP_ROUNDS, help="rounds of the single-step timing")
    parser.add_argument("--keep", type=Path, help="keep models, bundles and graphs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    THREADS, RUNS, STEP_ROUNDS = args.threads, args.runs, args.step_rounds
    torch.set_num_threads(THREADS)
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
