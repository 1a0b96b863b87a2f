"""`GenerationSpec`, the spec's ``generation`` section: decoding options, as a plain dataclass.

One table serves the spec file, the Python API, the CLI and the server. It is a standard-library
dataclass, not a Pydantic model, so the runtime reads and checks options without importing Pydantic
(building the spec's models cost a process about 0.07 s and 12 MiB, more than the rest of the
runtime's own modules): Pydantic validates the section inside `ModelSpec` (the field constraints below
are ``annotated_types`` markers, which it reads, and the attribute docstrings become the schema's
descriptions), and `check_generation` checks the same table for the runtime, with Pydantic's rules
for what the runtime is given (typed values) and its messages.
"""

from __future__ import annotations

import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, Lt

MAX_SEQUENCES = 4096  # beams, and sequences per prompt: each holds a cache (a billion beams took 8 GB before failing)


@dataclass(frozen=True)
class GenerationSpec:
    """Default decoding options for `nima generate`; command-line flags override them."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {
        "extra": "forbid",
        "allow_inf_nan": False,
        "use_attribute_docstrings": True,
        "revalidate_instances": "always",  # an instance built in Python is checked when a spec takes it
    }

    max_new_tokens: Annotated[int, Gt(0)] = 128
    """Tokens to generate after the prompt."""
    min_new_tokens: Annotated[int, Ge(0)] = 0
    """EOS is suppressed until this many tokens exist."""
    do_sample: bool = False
    """Sample instead of greedy / beam search."""
    temperature: Annotated[float, Ge(0.0)] = 1.0
    """Softmax temperature; 0 means greedy."""
    top_k: Annotated[int, Ge(0)] = 0
    """Keep the k most likely tokens; 0 disables."""
    top_p: Annotated[float, Gt(0.0), Le(1.0)] = 1.0
    """Nucleus sampling mass; 1 disables."""
    min_p: Annotated[float, Ge(0.0), Le(1.0)] = 0.0
    """Drop tokens below min_p * max probability."""
    num_beams: Annotated[int, Ge(1), Le(MAX_SEQUENCES)] = 1
    """Beam width; 1 disables beam search (at most 4,096: every beam holds a cache)."""
    length_penalty: Annotated[float, Ge(-40), Le(40)] = 1.0
    """Beam score = logprob / length**length_penalty (-40 to 40: past that the power leaves the range of a
    float at long lengths)."""
    early_stopping: bool | Literal["never"] = False
    """Beam search's stop rule, as transformers': true: once num_beams hypotheses finish; false: then also
    once the best live beam, scored at its current length, cannot beat the worst of them; never: only once
    it cannot at the longest allowed length."""
    num_return_sequences: Annotated[int, Ge(1), Le(MAX_SEQUENCES)] = 1
    """Sequences returned per prompt (at most 4,096: each is a row with a cache)."""
    repetition_penalty: Annotated[float, Gt(0.0)] = 1.0
    """CTRL penalty on tokens already present."""
    no_repeat_ngram_size: Annotated[int, Ge(0)] = 0
    """Forbid repeating n-grams of this size; 0 disables."""
    presence_penalty: Annotated[float, Ge(-2.0), Le(2.0)] = 0.0
    """OpenAI's: subtracted once from the logit of every token already generated."""
    frequency_penalty: Annotated[float, Ge(-2.0), Le(2.0)] = 0.0
    """OpenAI's: subtracted from a token's logit once per time it was generated."""
    eos_token_ids: list[int] = field(default_factory=list)
    """Token ids that end a sequence."""
    stop_strings: list[str] = field(default_factory=list)
    """Strings that end a sequence."""
    forced_bos_token_id: Annotated[int, Ge(0)] | None = None
    """Force this token first where the history is one token (an encoder-decoder's first output token:
    BART's <s>), as transformers does; omitted: none."""
    forced_eos_token_ids: list[int] = field(default_factory=list)
    """Force these end tokens as the last token max_new_tokens allows (transformers' forced_eos_token_id:
    BART's and Marian's configs set it); empty: none."""
    decoder_start_token_id: Annotated[int, Ge(0)] | None = None
    """An encoder-decoder's first decoder input (transformers' name); omitted: the training run's, else the
    tokenizer's <s>."""
    pad_token_id: Annotated[int, Ge(0)] | None = None
    """The id that fills an encoder-decoder's source rows (masked out); omitted: the training run's, else
    the tokenizer's <pad>."""
    seed: Annotated[int, Ge(0)] | None = None
    """Sampling seed; the same seed gives the same output."""
    prompt_lookup_num_tokens: Annotated[int, Ge(0), Le(64)] = 0
    """Prompt-lookup decoding: draft up to this many tokens from the text's own earlier tokens and check
    them in one step (transformers' name); greedy, decoder-only, no penalties; 0: off."""
    num_assistant_tokens: Annotated[int, Ge(1), Le(64)] = 4
    """Speculative decoding with a draft bundle (Generator(draft=...), nima generate --draft): tokens the
    draft proposes per target step, at most (transformers' name); the number adapts below it."""
    slide_context: bool = False
    """When prompt and output fill max_seq_len, go on: each further token from the last max_seq_len tokens,
    read anew (nanoGPT's sampler); one sequence at a time, decoder-only, no beams. Off: stop there."""
    json_schema: dict[str, Any] | None = None
    """Structured output: a JSON schema the output follows token by token ({"type": "object"}: any JSON
    object); decoder-only, greedy or sampled, not with beams; needs llguidance. Omitted: free text."""


class OptionError(ValueError):
    """A generation option that `check_generation` refuses: the field (``stop_strings.1`` for an item),
    what is wrong in Pydantic's words, and the value given."""

    def __init__(self, field: str, message: str, value: Any) -> None:
        super().__init__(f"{field}: {message} (got {value!r})")
        self.field, self.message, self.value = field, message, value


def check_generation(values: Mapping[str, Any], base: GenerationSpec | None = None) -> GenerationSpec:
    """``values`` as a `GenerationSpec`, each checked against its field's type and constraints; the
    fields they leave out are ``base``'s (already checked), else the defaults.

    What Pydantic's validation of the section accepts from typed values, this accepts (an integral
    float for an int, an int for a float, numpy's numbers, a tuple for a list), and it refuses the
    same: a boolean for a number or a number for a boolean (the spec's rule), infinities and NaN,
    values outside the bounds.
    Strings are not read as numbers or booleans (Pydantic's lax mode does, for text files; options
    reach the runtime typed). Unknown names raise `OptionError` too.
    """
    table = option_annotations()
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name not in table:
            raise OptionError(name, "unknown option", value)
        checked[name] = _check(name, table[name], value)
    return GenerationSpec(**checked) if base is None else replace(base, **checked)


@functools.cache
def option_annotations() -> dict[str, Any]:
    """Option name -> its annotation (``Annotated[int, Ge(0)] | None``), in the table's order."""
    hints = typing.get_type_hints(GenerationSpec, include_extras=True)
    return {f.name: hints[f.name] for f in fields(GenerationSpec)}


def _check(name: str, annotation: Any, value: Any) -> Any:
    """``value`` converted as Pydantic would for ``annotation``, or `OptionError`."""
    base, bounds = annotation, ()
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        bounds = tuple(extra)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(base)
        if value is None and type(None) in arms:
            return None
        literals = [arg for arm in arms if typing.get_origin(arm) is Literal for arg in typing.get_args(arm)]
        if isinstance(value, str) and value in literals:
            return value
        others = [arm for arm in arms if arm is not type(None) and typing.get_origin(arm) is not Literal]
        if len(others) != 1:
            raise TypeError(f"GenerationSpec.{name}: an annotation check_generation does not read")
        if literals and not isinstance(value, bool):
            expected = " or ".join(repr(arg) for arg in literals)
            raise OptionError(name, f"Input should be a valid boolean or {expected}", value)
        return _check(name, others[0], value)
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise OptionError(name, "Input should be a valid dictionary", value)
        return dict(value)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise OptionError(name, "Input should be a valid list", value)
        (item,) = typing.get_args(base)
        return [_check(f"{name}.{i}", item, v) for i, v in enumerate(value)]
    if base is bool:
        if not isinstance(value, bool):
            raise OptionError(name, "Input should be a valid boolean", value)
        return value
    if base is str:
        if not isinstance(value, str):
            raise OptionError(name, "Input should be a valid string", value)
        return value
    if base is int:
        number = _integer(name, value)
    elif base is float:
        number = _number(name, value)
    else:
        raise TypeError(f"GenerationSpec.{name}: an annotation check_generation does not read")
    for bound in bounds:
        _within(name, bound, number, value)
    return number


def _integer(name: str, value: Any) -> int:
    """An int from an integer (numpy's too) or an integral float, as Pydantic reads them."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(name, "Input should be a valid integer", value)
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(value):
            raise OptionError(name, "Input should be a finite number", value)
        if not float(value).is_integer():
            raise OptionError(name, "Input should be a valid integer, got a number with a fractional part", value)
        if abs(value) >= 2**63:  # Pydantic reads integral floats into 64 bits
            raise OptionError(name, "Unable to parse input string as an integer, exceeded maximum size", value)
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(name, "Input should be a valid number", value)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer past float's range
        raise OptionError(name, "Input should be a valid number", value) from None
    if not finite:
        raise OptionError(name, "Input should be a finite number", value)
    return float(value)


def _within(name: str, bound: Any, number: float, value: Any) -> None:
    """Pydantic's messages for the ``annotated_types`` bounds the table uses."""
    for kind, attribute, words, holds in (
        (Gt, "gt", "greater than", lambda limit: number > limit),
        (Ge, "ge", "greater than or equal to", lambda limit: number >= limit),
        (Lt, "lt", "less than", lambda limit: number < limit),
        (Le, "le", "less than or equal to", lambda limit: number <= limit),
    ):
        if isinstance(bound, kind):
            limit = getattr(bound, attribute)
            if not holds(limit):
                shown = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
                raise OptionError(name, f"Input should be {words} {shown}", value)
            return
    raise TypeError(f"GenerationSpec.{name}: a constraint check_generation does not read: {bound!r}")
