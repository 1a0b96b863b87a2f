"""Generation options: the bundle's ``generation`` section, overridden per call, checked up front.

The option set is the spec's `GenerationSpec` (one definition for the spec file, the Python API
and the CLI), so its field constraints (``top_p`` in (0, 1], ``temperature >= 0``, ...) apply to
every call; `check_generation` checks them without Pydantic. Rules that tie options together are
checked here, before any work starts.
"""

from __future__ import annotations

from typing import Any

from nima.runtime.errors import GenerateError
from nima.spec.generation import GenerationSpec, OptionError, check_generation, option_annotations

OPTION_NAMES = tuple(option_annotations())


def resolve_options(defaults: GenerationSpec, overrides: dict[str, Any]) -> GenerationSpec:
    """``defaults`` with ``overrides`` applied (``None`` values ignored), validated as a whole.

    Asking for beams (``num_beams > 1``) without also asking for sampling turns sampling off even
    when the defaults sample: beam search is the request. Asking for both is an error.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise GenerateError(f"unknown generation option {unknown[0]!r}; known: {', '.join(OPTION_NAMES)}")
    if given.get("num_beams", 1) > 1 and "do_sample" not in given:
        given["do_sample"] = False
    try:
        options = check_generation(given, defaults)
    except OptionError as err:
        raise GenerateError(f"option {err.field}: {err.message} (got {err.value!r})") from None
    _check_combination(options)
    return options


def is_greedy(options: GenerationSpec) -> bool:
    """Greedy decoding: no sampling (or temperature 0) and a single beam."""
    return options.num_beams == 1 and (not options.do_sample or options.temperature == 0.0)


def _check_combination(options: GenerationSpec) -> None:
    if options.num_beams > 1:
        if options.do_sample:
            raise GenerateError("option num_beams: beam search with do_sample is not supported; drop one of them")
        if options.num_return_sequences > options.num_beams:
            raise GenerateError(
                f"option num_return_sequences: {options.num_return_sequences} exceeds num_beams {options.num_beams}"
            )
    elif is_greedy(options) and options.num_return_sequences > 1:
        raise GenerateError("option num_return_sequences: greedy decoding returns one sequence; sample or use beams")
    if options.min_new_tokens > options.max_new_tokens:
        raise GenerateError(
            f"option min_new_tokens: {options.min_new_tokens} exceeds max_new_tokens {options.max_new_tokens}"
        )
    if any(not text for text in options.stop_strings):
        raise GenerateError("option stop_strings: an empty stop string would stop at once")
