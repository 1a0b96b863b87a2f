"""CUDA training check: which SDPA kernel each attention pattern reaches, each precision's logits against
the fp32 CPU forward, and training tokens/s per precision, with and without torch.compile.

Needs a CUDA GPU (``--device cpu`` is a dry run of the same code on the tiny preset, fp32 only):

    python bench/cuda_check.py                              # about 4-5 minutes on one H200
    python bench/cuda_check.py --data ../shared/data/tinyshakespeare.txt

It prints four tables:

1. **Kernels.** A bf16 forward and backward of each attention pattern, first with only SDPA's
   flash kernel allowed, then memory-efficient, then math: the first that runs is the one the
   pattern reaches. Full causal attention without padding passes no mask, so it should reach
   flash; patterns that add a bias (ALiBi, sliding windows) cannot.
2. **Numerics.** One batch's logits on the GPU in fp32, bf16 and fp16 autocast against the fp32
   forward of the same weights on the CPU: the largest difference relative to the largest logit,
   and how often the argmax agrees.
3. **Throughput.** Nima's own `train_step` (sampling, autocast, loss scaling for fp16, clipping,
   fused AdamW) on the bytes of the data file, per precision, with and without torch.compile:
   tokens/s, the loss of the first and last step (it must fall: the step really trains), and peak
   memory. The same step on nanoGPT's model (bench/_nanogpt.py, ``bench/train.py``'s reference)
   gives the ratio.
4. **End to end.** ``nima train`` on the data with the shakespeare-char spec, then ``nima export``
   (verified in ONNX Runtime) and ``nima generate``: the commands a user runs after training on a GPU.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _nanogpt import ReferenceGPT  # nanoGPT's GPT-2, bench/train.py's reference
from torch.nn.attention import SDPBackend, sdpa_kernel

from nima.builders import build_model
from nima.spec import ModelSpec, load_spec, parameter_count, spec_from_dict
from nima.train.data import Corpus
from nima.train.distributed import World
from nima.train.loop import train_step
from nima.train.optim import build_optimizer
from nima.train.run import build_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
KERNELS = [
    ("flash", SDPBackend.FLASH_ATTENTION),
    ("efficient", SDPBackend.EFFICIENT_ATTENTION),
    ("math", SDPBackend.MATH),
]
PATTERNS = {  # name -> spec source and overrides; two layers are enough to see the kernel
    "full (GPT-2 style)": ("small", ["n_layers=2"]),
    "full + GQA + rope (LLaMA style)": ("specs/llama-style.yaml", ["n_layers=2"]),
    "ALiBi": ("specs/alibi.yaml", ["n_layers=2"]),
    "sliding window": ("specs/sliding-window.yaml", ["n_layers=2"]),
}


def make_spec(source: str, overrides: list[str]) -> ModelSpec:
    if source.endswith(".yaml"):
        return load_spec(ROOT / source, overrides)
    return spec_from_dict({"extends": source}, overrides=overrides)


def kernel_reached(spec: ModelSpec, device: torch.device) -> str:
    """The first SDPA kernel, fastest first, that runs this model's bf16 forward and backward."""
    model = build_model(spec, seed=0).to(device)
    ids = torch.randint(0, spec.vocab_size, (2, 256), device=device)  # (B, T)
    for name, backend in KERNELS:
        try:  # a kernel that cannot run warns why, then raises: the table says it more briefly
            with warnings.catch_warnings(), sdpa_kernel([backend]), torch.autocast("cuda", dtype=torch.bfloat16):
                warnings.simplefilter("ignore")
                logits, _ = model(ids)  # (B, T, V)
            logits.float().square().mean().backward()
            return name
        except RuntimeError:
            model.zero_grad(set_to_none=True)
    return "none"


def numerics(spec: ModelSpec, device: torch.device) -> list[tuple[str, float, float]]:
    """(mode, max |logit diff| / max |logit|, argmax agreement) against the fp32 CPU forward."""
    model = build_model(spec, seed=0).eval()
    ids = torch.randint(0, spec.vocab_size, (4, 256), generator=torch.Generator().manual_seed(0))  # (B, T)
    with torch.no_grad():
        want = model(ids)[0]  # (B, T, V)
        model.to(device)
        rows = []
        for mode in ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32",):
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                got = model(ids.to(device))[0].float().cpu()  # (B, T, V)
            rel = float((got - want).abs().max() / want.abs().max())
            agree = float((got.argmax(-1) == want.argmax(-1)).float().mean())
            rows.append((mode, rel, agree))
    return rows


def byte_corpus(path: Path) -> Corpus:
    """The file's bytes as token ids (every preset's vocabulary holds 256 ids): real text, no tokenizer."""
    ids = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.uint16)
    cut = int(len(ids) * 0.9)
    return Corpus({"train": ids[:cut], "val": ids[cut:]}, {"train": cut, "val": len(ids) - cut}, meta={})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train_step(spec: ModelSpec, corpus: Corpus, device: torch.device, steps: int) -> dict[str, float]:
    """Tokens/s of `train_step` after two warm-up steps (compilation happens there), first and last loss."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = build_run(spec, corpus, World(0, 1, device))
    losses = []
    started = time.perf_counter()
    for step in range(2):
        loss_sum, tokens, _, _ = train_step(run, step)
        losses.append(float(loss_sum) / tokens)
    sync(device)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for step in range(2, 2 + steps):
        loss_sum, tokens, _, _ = train_step(run, step)
    sync(device)
    seconds = time.perf_counter() - started
    losses.append(float(loss_sum) / tokens)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"tok/s": tokens * steps / seconds, "first": losses[0], "last": losses[-1], "warm s": warm, "GiB": peak}


def plain_step(
    model: torch.nn.Module, spec: ModelSpec, batches: list[torch.Tensor], dtype: torch.dtype
) -> Callable[[], int]:
    """One plain step (autocast forward, fp32 loss, backward, clip, fused AdamW) on ``model``, warmed up."""
    device = batches[0].device
    optimizer = build_optimizer(model, spec.training.optimizer, device)
    forward: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda x: model(x)[0]) if hasattr(model, "stacks") else model  # Nima returns (logits, cache)
    )
    taken = iter(range(10**9))

    def step() -> int:
        batch = batches[next(taken) % len(batches)]  # (B, T+1)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = forward(batch[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.training.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch[:, :-1].numel()

    for _ in range(3):  # warm-up: allocator, kernels, compilation
        step()
    return step


def race(steps: dict[str, Callable[[], int]], rounds: int, per_round: int, device: torch.device) -> dict[str, float]:
    """Best tokens/s of each contender over ``rounds`` rounds of ``per_round`` steps, alternating who goes first."""
    best = dict.fromkeys(steps, 0.0)
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            started = time.perf_counter()
            tokens = sum(steps[name]() for _ in range(per_round))
            sync(device)
            best[name] = max(best[name], tokens / (time.perf_counter() - started))
    return best


def run_commands(commands: list[list[str]]) -> None:
    """Each `nima` command in a fresh process, with its exit code, time and last lines; stop at a failure."""
    for args in commands:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-4:]
        shown = f"nima {args[2]}" if args[0] == "-m" else Path(args[0]).name
        print(f"$ {shown} ...  (exit {done.returncode}, {time.perf_counter() - started:.1f} s)")
        for line in tail:
            print(f"    {line}")
        if done.returncode != 0 and args[-1] != "cuda":
            return


def end_to_end(data: Path, device: torch.device) -> None:
    """`nima train`, `nima export --onnx`, `nima generate` as a user runs them, for a decoder and a seq2seq model."""
    steps = ("300", "1350") if device.type == "cuda" else ("20", "20")
    nima = ["-m", "nima"]
    with tempfile.TemporaryDirectory() as tmp:
        run_commands(
            [
                [*nima, "train", str(ROOT / "specs/shakespeare-char.yaml"), "--data", str(data), "--out", f"{tmp}/run"]
                + ["--set", f"training.max_steps={steps[0]}", "--set", "training.eval_every=100"],
                [*nima, "export", "--onnx", f"{tmp}/run", "-o", f"{tmp}/bundle"],
                [*nima, "generate", f"{tmp}/bundle", "--prompt", "ROMEO:", "--max-new-tokens", "60", "--seed", "0"],
                # ONNX Runtime's CUDA provider comes with onnxruntime-gpu: without it, a clear refusal
                [*nima, "generate", f"{tmp}/bundle", "--prompt-ids", "1,2", "--provider", "cuda"],
            ]
        )
        # the reversal run of docs/seq2seq.md (90.8% held-out exact match after 1,350 steps on a 2-core CPU)
        fraction = "0.020119105102205055"  # what examples/reverse_words.py prints for the default held-out lines
        run_commands(
            [
                [str(ROOT / "examples/reverse_words.py"), str(data), "-o", f"{tmp}/pairs.tsv"],
                [*nima, "train", str(ROOT / "specs/reverse-words.yaml"), "--data", f"{tmp}/pairs.tsv"]
                + ["--out", f"{tmp}/s2s", "--set", f"training.max_steps={steps[1]}"]
                + ["--set", f"training.val_fraction={fraction}"],
                [*nima, "export", "--onnx", f"{tmp}/s2s", "-o", f"{tmp}/s2s-bundle"],
                [*nima, "generate", f"{tmp}/s2s-bundle", "--source", "To be or not to be that is the question"],
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--data", type=Path, default=DATA, help="a text file (default: tinyshakespeare)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here; --device cpu runs the same code as a dry run", file=sys.stderr)
        raise SystemExit(2)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    import onnxruntime

    print(f"torch {torch.__version__}, {gpu}, fp32 matmul precision {torch.get_float32_matmul_precision()}")
    print(f"onnxruntime {onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}")

    if device.type == "cuda":
        print("\n1. SDPA kernel reached in bf16 training (forward + backward)")
        for name, (source, overrides) in PATTERNS.items():
            print(f"   {name:34} {kernel_reached(make_spec(source, overrides), device)}", flush=True)

    preset = "small" if device.type == "cuda" else "tiny"
    seq_len, batch = (1024, 16) if device.type == "cuda" else (128, 2)
    training = [f"training.seq_len={seq_len}", f"training.batch_size={batch}", "training.schedule.warmup_steps=2"]
    print(f"\n2. Logits against the fp32 CPU forward ({preset} preset, 4 x 256 random ids)")
    print(f"   {'mode':6} {'max diff / max logit':>21} {'argmax agreement':>17}")
    for mode, rel, agree in numerics(make_spec(preset, []), device):
        print(f"   {mode:6} {rel:>21.2e} {100 * agree:>16.2f}%", flush=True)

    corpus = byte_corpus(args.data)
    print(f"\n3. Training throughput, batch {batch} x {seq_len} tokens of {args.data.name} bytes, {args.steps} steps")
    print(
        f"   {'model':12} {'params':>7} {'precision':9} {'compile':7} {'tok/s':>10} {'loss first -> last':>19}"
        f" {'warm-up s':>9} {'peak GiB':>8}"
    )
    configs = [(p, False) for p in (("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32",))]
    configs += [] if args.no_compile else [("bf16" if device.type == "cuda" else "fp32", True)]
    sources = {"GPT-2 small": preset, "LLaMA-style": "specs/llama-style.yaml"}
    for label, source in sources.items():
        for precision, compiled in configs:
            if label == "LLaMA-style" and compiled:
                continue  # one compiled row (GPT-2) keeps the run short
            overrides = [*training, f"training.precision={precision}", f"training.compile={str(compiled).lower()}"]
            overrides += ["n_layers=2", "d_model=128", "attention.n_heads=4"] if device.type == "cpu" else []
            spec = make_spec(source, overrides)
            r = time_train_step(spec, corpus, device, args.steps)
            ok = "" if math.isfinite(r["last"]) and r["last"] < r["first"] else "  <- loss did not fall"
            print(
                f"   {label:12} {parameter_count(spec) / 1e6:>6.0f}M {precision:9} {str(compiled):7} "
                f"{r['tok/s']:>10,.0f} {r['first']:>8.2f} -> {r['last']:<8.2f} {r['warm s']:>9.1f} "
                f"{r['GiB']:>8.1f}{ok}",
                flush=True,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    spec = make_spec(preset, training)
    print(
        f"\n   Same plain step on Nima's and nanoGPT's {preset} model ({str(dtype)[6:]} autocast, random ids; "
        "best of 6 alternating rounds of 8 steps):"
    )
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, spec.vocab_size, (batch, seq_len + 1), generator=gen).to(device) for _ in range(4)]
    for compiled in (False,) if args.no_compile else (False, True):
        models = {"nima": build_model(spec, seed=0).to(device), "nanoGPT": ReferenceGPT(spec).to(device)}
        if compiled:
            for model in models.values():
                model.compile()
        speed = race({name: plain_step(m, spec, ids, dtype) for name, m in models.items()}, 6, 8, device)
        print(
            f"   {'compiled' if compiled else 'eager':8} nima {speed['nima']:>9,.0f} tok/s, "
            f"nanoGPT {speed['nanoGPT']:>9,.0f} tok/s, ratio {speed['nima'] / speed['nanoGPT']:.3f}x",
            flush=True,
        )
        del models

    print("\n4. End to end on the GPU")
    end_to_end(args.data, device)


if __name__ == "__main__":
    main()
