"""onnxruntime-genai for the benchmarks: its greedy decoding as a `Runner`, and its model builder.

`genai_runner` is the reference runtime the decode benchmarks compare with. `save_hf` writes a
Nima model's weights as the transformers folder the builder reads, and `run_genai_builder` runs
the builder on it (bench/genai_compare.py compares the graph it makes with Nima's).

The top level imports onnxruntime-genai and numpy only; transformers (and torch) load inside the
builder's helpers, so a process that times a deployment (bench/processes.py's genai child) can
import this module without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime_genai as og
from _harness import Runner, Timing

if TYPE_CHECKING:
    from torch import nn

    from nima.spec import ModelSpec


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


def save_hf(model: nn.Module, spec: ModelSpec, folder: Path, eos: int) -> Path:
    """The model as a transformers folder (bench/_hf_weights.py) with ``eos`` as its end, start and
    padding id and a placeholder tokenizer: what the genai builder reads. Returns ``folder``."""
    from _hf_weights import to_hf

    hf = to_hf(model, spec)
    hf.config.eos_token_id = hf.config.bos_token_id = hf.config.pad_token_id = eos
    hf.generation_config.eos_token_id = hf.generation_config.bos_token_id = eos
    hf.generation_config.pad_token_id = eos
    hf.save_pretrained(str(folder))
    save_placeholder_tokenizer(folder, spec.vocab_size, eos)
    return folder


def save_placeholder_tokenizer(folder: Path, vocab: int, eos: int) -> None:
    """A word-level tokenizer ``t0 .. t{vocab-1}``: the genai builder insists on one; runs feed ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

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
