"""A request's sampling fields as `GenerationSpec` options (and back, for errors that name the field).

OpenAI's and vLLM's fields become the options `Generator.options` checks: ``n`` is
``num_return_sequences``, ``temperature: 0`` greedy decoding, ``stop_token_ids`` more end tokens,
``ignore_eos`` end tokens that end nothing; ``logit_bias`` becomes the arrays a row adds to its
scores. An option error from the runtime ("option top_p: ...") is reported against the request's
field (``top_p``; ``max_new_tokens`` as ``max_tokens``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from nima.runtime.generator import Generator
from nima.serve.choose import LogitBias
from nima.serve.errors import ApiError
from nima.serve.protocol import Sampling
from nima.spec.generation import GenerationSpec

# GenerationSpec option -> the request field that sets it, for naming the field in errors
FIELD_OF = {
    "max_new_tokens": "max_tokens",
    "num_return_sequences": "n",
    "stop_strings": "stop",
    "min_new_tokens": "min_tokens",
    "eos_token_ids": "stop_token_ids",
    "do_sample": "temperature",
    "json_schema": "response_format",
}
ANY_OBJECT: dict[str, Any] = {"type": "object"}  # OpenAI's JSON mode: any JSON object


def overrides(request: Sampling, max_tokens: int | None, generator: Generator) -> dict[str, Any]:
    """The request's fields as `GenerationSpec` options, over the bundle's ``generation`` section as an
    OpenAI-compatible server reads it (vLLM's rule): the section's sampling shape applies (temperature,
    top-k, top-p, min-p, the penalties, stop strings, end tokens), but a request samples unless it says
    ``temperature: 0`` (the section's ``do_sample`` is ``nima generate``'s), searches one beam unless it
    asks for more, runs to the end of the context unless it gives ``max_tokens``, and draws from fresh
    entropy unless it gives a seed (`seeded`)."""
    given = request.model_fields_set
    beams = request.num_beams is not None and request.num_beams > 1
    found: dict[str, Any] = {
        "max_new_tokens": max_tokens if max_tokens is not None else generator.spec.max_seq_len,
        "do_sample": None if beams else True,  # a temperature of 0 makes it greedy (below)
        "prompt_lookup_num_tokens": 0,
        "num_return_sequences": request.n,
        "seed": None if request.seed is None else request.seed % 2**64,  # the same 64 bits, unsigned
        "stop_strings": [request.stop] if isinstance(request.stop, str) else request.stop,
        "presence_penalty": request.presence_penalty if "presence_penalty" in given else None,
        "frequency_penalty": request.frequency_penalty if "frequency_penalty" in given else None,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repetition_penalty": request.repetition_penalty,
        "no_repeat_ngram_size": request.no_repeat_ngram_size,
        "min_new_tokens": request.min_tokens,
        "num_beams": request.num_beams if beams else 1,
        "length_penalty": request.length_penalty,
        "slide_context": False,
    }
    given_format = request.response_format
    if given_format is not None and given_format.type != "text":  # a JSON schema the answer follows
        schema = getattr(given_format, "json_schema", None)
        found["json_schema"] = ANY_OBJECT if schema is None or schema.schema_ is None else schema.schema_
    if request.temperature is not None:  # 0: greedy; above: sampling at that temperature
        found["do_sample"] = request.temperature > 0
        if request.temperature > 0:
            found["temperature"] = request.temperature
    if request.stop_token_ids:  # more end tokens, beside the bundle's
        vocab = generator.spec.vocab_size
        bad = next((t for t in request.stop_token_ids if t >= vocab), None)
        if bad is not None:
            message = f"stop_token_ids: {bad} is outside the vocabulary (0..{vocab - 1})"
            raise ApiError(400, message, "stop_token_ids")
        ends = () if request.ignore_eos else generator._eos_ids(generator.options())
        found["eos_token_ids"] = list(dict.fromkeys([*ends, *request.stop_token_ids]))  # ignore_eos: those only
    elif request.ignore_eos:  # as vLLM's benchmarks use it: the model's end tokens end nothing (banned to the end)
        found["min_new_tokens"] = found["max_new_tokens"]
    return {name: value for name, value in found.items() if value is not None}


def seeded(options: GenerationSpec, request: Sampling) -> GenerationSpec:
    """``options`` with the request's seed, or none: a seed in the bundle's section is for ``nima generate``,
    and every unseeded request would otherwise draw the same tokens."""
    seed = None if request.seed is None else request.seed % 2**64
    return options if options.seed == seed else replace(options, seed=seed)


def logit_bias(given: dict[str, float] | None, vocab: int) -> LogitBias | None:
    """A request's ``logit_bias`` (token ids as decimal JSON keys, values already within ±100) as arrays;
    None when absent, empty or all zero. A key that is no token id is a 400 naming it."""
    if not given:
        return None
    bias: dict[int, float] = {}
    for key, value in given.items():
        token = int(key) if key.isascii() and key.isdigit() and len(key) <= 12 else None
        if token is None:
            raise ApiError(400, f"logit_bias: {key[:40]!r} is not a token id (a decimal number)", "logit_bias")
        if token >= vocab:
            message = f"logit_bias: token {token} is past the model's vocabulary ({vocab} tokens)"
            raise ApiError(400, message, "logit_bias")
        if value:
            bias[token] = value
    if not bias:
        return None
    return LogitBias(np.array(list(bias), dtype=np.int64), np.array(list(bias.values()), dtype=np.float32))


def option_error(message: str) -> ApiError:
    """`GenerateError` from `Generator.options` ("option top_p: ...") as a 400 naming the request field."""
    found = re.match(r"option (\w+)", message)
    option = found.group(1) if found else None
    param = FIELD_OF.get(option, option) if option else None
    text = message
    if option and param != option:
        text = text.replace(f"option {option}", param, 1)
    return ApiError(400, without_option(text), param)


def without_option(message: str) -> str:
    return message[len("option ") :] if message.startswith("option ") else message
