"""The engines bench/peers.py compares, each as an opener (a model path to a greedy decode function)
and a converter (a transformers Llama folder to that engine's model at a width).

Nima's runtime, CTranslate2 and llama.cpp (through llama-cpp-python's low-level API: the greedy
sampler in C, no Python per token but the call). Every engine package is imported inside the
function that uses it: a process that times one engine loads no other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from _harness import NEW_TOKENS, PROMPT_TOKENS, THREADS

LLAMA_FTYPES = {"int8": "LLAMA_FTYPE_MOSTLY_Q8_0", "int4": "LLAMA_FTYPE_MOSTLY_Q4_0"}

# (prompt, new tokens) -> (tokens, time to first token, time for the rest), seconds
Decode = Callable[[list[int], int], tuple[list[int], float, float]]


def _nima(path: str, eos: int) -> Decode:
    from nima.runtime import Generator

    generator = Generator(path, threads=THREADS)

    def decode(prompt: list[int], new: int) -> tuple[list[int], float, float]:
        start = time.perf_counter()
        stream = generator.stream_tokens(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        tokens = [next(stream)]
        first = time.perf_counter()
        tokens.extend(stream)
        return tokens, first - start, time.perf_counter() - first

    return decode


def _ctranslate2(path: str, eos: int) -> Decode:
    import ctranslate2

    generator = ctranslate2.Generator(path, device="cpu", intra_threads=THREADS, inter_threads=1)

    def decode(prompt: list[int], new: int) -> tuple[list[int], float, float]:
        start = time.perf_counter()
        steps = generator.generate_tokens(
            [f"t{t}" for t in prompt], max_length=new, sampling_topk=1, end_token=f"t{eos}"
        )
        tokens = [next(steps).token_id]
        first = time.perf_counter()
        tokens.extend(step.token_id for step in steps)
        return tokens[:new], first - start, time.perf_counter() - first

    return decode


def _llama_cpp(path: str, eos: int) -> Decode:
    import ctypes

    import llama_cpp as lc
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp logs every tensor it loads on stderr
    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = PROMPT_TOKENS + NEW_TOKENS + 16
    params.n_threads = params.n_threads_batch = THREADS
    context = lc.llama_init_from_model(model, params)
    sampler = lc.llama_sampler_init_greedy()

    def step(tokens: list[int]) -> int:
        ids = (ctypes.c_int32 * len(tokens))(*tokens)  # the batch points into it: kept alive until decoded
        batch = lc.llama_batch_get_one(ids, len(tokens))
        if lc.llama_decode(context, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return int(lc.llama_sampler_sample(sampler, context, -1))

    def decode(prompt: list[int], new: int) -> tuple[list[int], float, float]:
        lc.llama_memory_clear(lc.llama_get_memory(context), True)
        start = time.perf_counter()
        tokens = [step(prompt)]
        first = time.perf_counter()
        while len(tokens) < new:
            tokens.append(step(tokens[-1:]))
        return tokens, first - start, time.perf_counter() - first

    return decode


OPENERS: dict[str, Callable[[str, int], Decode]] = {"nima": _nima, "ctranslate2": _ctranslate2, "llama.cpp": _llama_cpp}


def _convert_nima(hf: Path, out: Path, width: str, eos: int) -> Path:
    from nima.export.bundle import export_bundle
    from nima.interop.hf.importer import import_hf

    model = out.parent / "nima-model"
    if not (model / "model.safetensors").is_file():
        import_hf(hf, model)
    if not (out / "model.onnx").is_file():
        quantize = {} if width == "fp32" else {"quantize": width}
        # unchecked: int4 of random 124M weights misses the export check's logit tolerance (docs/performance.md)
        export_bundle(model, out, target="ort", verify=width == "fp32", force=True, **quantize)
    return out


def _convert_ctranslate2(hf: Path, out: Path, width: str, eos: int) -> Path:
    import ctranslate2

    if not (out / "model.bin").is_file():
        quantization = None if width == "fp32" else "int8"
        ctranslate2.converters.TransformersConverter(str(hf)).convert(str(out), quantization=quantization, force=True)
    return out


def _convert_llama_cpp(hf: Path, out: Path, width: str, eos: int) -> Path:
    from _gguf import llama_gguf

    fp32 = out.parent / "llama.cpp-fp32.gguf"
    if not fp32.is_file():
        llama_gguf(hf, fp32, eos)
    if width == "fp32":
        return fp32
    target = out.with_suffix(".gguf")
    if not target.is_file():
        import llama_cpp as lc
        from llama_cpp._logger import set_verbose

        set_verbose(False)
        params = lc.llama_model_quantize_default_params()
        params.ftype = getattr(lc, LLAMA_FTYPES[width])
        params.nthread = THREADS
        if lc.llama_model_quantize(str(fp32).encode(), str(target).encode(), params) != 0:
            raise RuntimeError(f"llama_model_quantize to {width} failed")
    return target


CONVERTERS = {"nima": _convert_nima, "ctranslate2": _convert_ctranslate2, "llama.cpp": _convert_llama_cpp}
