"""OpenAI's ``response_format``: output that is JSON, any object or one a JSON schema describes.

A grammar decides, before each token, which tokens may come next; the others get ``-inf`` before the
row's processors and warpers run, so a greedy row takes the likeliest allowed token and a sampled row
draws from the model's distribution restricted to them. Once the text is complete, only the end
token is allowed, and the row ends as any row does (``finish_reason: "stop"``); a row that reaches
``max_tokens`` first ends with ``"length"`` and a prefix of a valid document, as OpenAI's do.

The grammar engine is llguidance (Rust, the engine onnxruntime-genai and vLLM use, torch-free, with
numpy helpers): it compiles a schema against the bundle's ``tokenizer.json`` and fills a bit mask
of allowed tokens per step, in tens of microseconds. Its own limits bound what a hostile schema
costs (grammar size, lexer states, work per step); a schema it cannot compile, or whose first step
passes a limit, is a 400 naming ``response_format``; one that passes a limit later ends its request
with that error (the other rows go on). llguidance is imported only when a request asks for a format.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from nima.runtime.errors import GenerateError
from nima.serve.errors import ApiError
from nima.serve.protocol import JsonSchemaFormat, ResponseFormat
from nima.spec.generation import GenerationSpec

FIELD = "response_format"
ANY_OBJECT: dict[str, Any] = {"type": "object"}  # ``json_object``: any JSON object, as OpenAI's JSON mode
# Characters a schema may take as JSON. Compiling grows faster than the schema for some shapes (5,000
# optional properties, 64 KB: 1.2 s here; 12,000: 7.7 s, then llguidance's own size assertion), and a
# request's schema should not buy seconds of a core; real schemas are a few kilobytes.
MAX_SCHEMA_CHARS = 65_536


class RowGrammar:
    """One row's place in its grammar: which tokens may come next, and the tokens it took."""

    def __init__(self, matcher: Any, vocab: int) -> None:
        self.matcher = matcher
        self.vocab = vocab
        self.words = np.empty((1, (vocab + 31) // 32), dtype="<i4")  # llguidance's mask: bit t%32 of word t//32

    def forbid(self, logits: np.ndarray) -> None:
        """Give every token the grammar does not allow next ``-inf``, in place on one row's scores (V,)."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self.words)
        if self.matcher.is_error():  # a limit reached (`Formats.compile`): `take` fails this row's request alone
            return
        allowed = np.unpackbits(self.words.view(np.uint8), count=self.vocab, bitorder="little")  # (V,) 0 / 1
        np.copyto(logits, -np.inf, where=allowed == 0)

    def take(self, token: int) -> None:
        """Advance past ``token``; `GenerateError` (the row's request fails) where the grammar engine stopped."""
        if self.matcher.is_error() or not self.matcher.consume_token(token):
            raise GenerateError(f"{FIELD}: the grammar engine stopped: {_one_line(self.matcher.get_error())}")


class Grammar:
    """A compiled response format: a matcher at its start, copied for each row that follows it."""

    def __init__(self, matcher: Any, vocab: int) -> None:
        self._start = matcher
        self.vocab = vocab

    def start(self) -> RowGrammar:
        return RowGrammar(self._start.deep_copy(), self.vocab)


class Formats:
    """Compiles requests' response formats against one bundle's tokenizer (built once, at the first)."""

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        self._source = tokenizer  # a `tokenizers.Tokenizer`, or None
        self._vocab = vocab
        self._tokenizers: dict[tuple[int, ...], Any] = {}  # by end tokens: the grammar allows them at its end
        self._lock = threading.Lock()

    def compile(self, given: ResponseFormat | None, eos_ids: tuple[int, ...]) -> Grammar | None:
        """The grammar ``given`` asks for (None for text), or `ApiError` 400 naming ``response_format``."""
        if given is None or given.type == "text":
            return None
        if self._source is None:
            raise ApiError(400, f"{FIELD}: this bundle has no tokenizer.json to build a grammar over", FIELD)
        if not eos_ids:
            raise ApiError(400, f"{FIELD}: the model has no end token to finish a formatted answer with", FIELD)
        try:
            import llguidance
        except ImportError:
            message = f"{FIELD}: needs llguidance, which `pip install 'nima-lm[serve]'` installs"
            raise ApiError(400, message, FIELD, "unsupported_parameter") from None
        schema = _schema(given)
        size = len(json.dumps(schema))
        if size > MAX_SCHEMA_CHARS:
            message = f"{FIELD}: the schema is {size:,} characters as JSON; at most {MAX_SCHEMA_CHARS:,} are taken"
            raise ApiError(400, message, FIELD)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
        except (ValueError, TypeError) as err:
            raise ApiError(400, f"{FIELD}: {_one_line(err)}", FIELD) from None
        limits = llguidance.LLParserLimits(verbose_errors=False)  # errors name the problem, not the whole grammar
        matcher = llguidance.LLMatcher(self._tokenizer(eos_ids), grammar, log_level=0, limits=limits)
        if not matcher.is_error():
            matcher.compute_bitmask()  # the first step's mask: a schema too complex to start fails here, as a 400
        if matcher.is_error():
            raise ApiError(400, f"{FIELD}: the schema cannot be followed: {_one_line(matcher.get_error())}", FIELD)
        return Grammar(matcher, self._vocab)

    def _tokenizer(self, eos_ids: tuple[int, ...]) -> Any:
        import llguidance

        with self._lock:
            found = self._tokenizers.get(eos_ids)
            if found is None:
                try:
                    found = llguidance.LLTokenizer(self._source.to_str(), n_vocab=self._vocab, eos_token=list(eos_ids))
                except (ValueError, TypeError, RuntimeError) as err:
                    message = f"{FIELD}: the grammar engine cannot read this bundle's tokenizer ({_one_line(err)})"
                    raise ApiError(400, message, FIELD, "unsupported_parameter") from None
                self._tokenizers[eos_ids] = found
            return found


def request_grammar(
    formats: Formats, given: ResponseFormat | None, options: GenerationSpec, seq2seq: bool, eos_ids: tuple[int, ...]
) -> Grammar | None:
    """The grammar a request's rows follow, after refusing what cannot follow one: beams, an
    encoder-decoder (its first token may be forced), and bans that could leave a row no allowed token
    (the end token banned by ``min_tokens`` or ``ignore_eos`` where only it may come, n-gram bans)."""
    if given is None or given.type == "text":
        return None
    refused = None
    if seq2seq:
        refused = "is followed by decoder-only bundles (an encoder-decoder's first token may be fixed)"
    elif options.num_beams > 1:
        refused = "is not followed in beam search"
    elif options.min_new_tokens:
        refused = "cannot be combined with min_tokens or ignore_eos (a complete answer must be able to end)"
    elif options.no_repeat_ngram_size:
        refused = "cannot be combined with no_repeat_ngram_size (it could ban the only token the format allows)"
    if refused is not None:
        raise ApiError(400, f"{FIELD}: {refused}", FIELD)
    return formats.compile(given, eos_ids)


def _schema(given: ResponseFormat) -> dict[str, Any]:
    if isinstance(given, JsonSchemaFormat) and given.json_schema.schema_ is not None:
        return given.json_schema.schema_
    return ANY_OBJECT


def _one_line(err: object) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")
