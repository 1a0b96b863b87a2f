"""Structured output: text that is a JSON document a JSON schema describes, token by token.

A grammar decides, before each token, which tokens may come next; the others get ``-inf`` before the
row's processors and warpers run, so a greedy row takes the likeliest allowed token and a sampled row
draws from the model's distribution restricted to them. Once the document is complete only the end
tokens are allowed, and the row ends as any row does (finish reason ``stop``); a row that reaches
its length limit first ends with ``length`` and the start of a valid document.

The grammar engine is llguidance (Rust, the engine onnxruntime-genai and vLLM use, torch-free, with
numpy helpers): it compiles a schema against the bundle's ``tokenizer.json`` and fills a bit mask of
allowed tokens per step, in tens of microseconds. Its own limits bound what a hostile schema costs
(grammar size, lexer states, work per step); a schema it cannot compile, or whose first step passes
a limit, is refused before any decoding (`GenerateError`); one that passes a limit later ends its row
with that error. llguidance is imported only when a schema is given.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from nima.runtime.errors import GenerateError
from nima.spec.generation import GenerationSpec

OPTION = "option json_schema"
# Characters a schema may take as JSON. Compiling grows faster than the schema for some shapes (5,000
# optional properties, 64 KB: 1.2 s here; 12,000: 7.7 s, then llguidance's own size assertion); real
# schemas are a few kilobytes.
MAX_SCHEMA_CHARS = 65_536
NEG_INF_BITS = np.array([-np.inf], dtype=np.float32).view(np.int32)[0]
# Whitespace between JSON tokens, llama.cpp's rule: none, one space, or one or two newlines and up to 20
# spaces or tabs of indentation (pretty-printed JSON to depth 10). llguidance's own default, any run
# of whitespace (as vLLM's), let a small model write newlines until its length limit; a schema's
# "x-guidance" whitespace keys replace it.
WHITESPACE = r"(?: |\n{1,2}[ \t]{0,20})?"
CACHED = 32  # compiled schemas kept (a server sees the same few schemas again and again)


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
        if self.matcher.is_error():  # a limit reached: `take` raises for this row
            return
        allowed = np.unpackbits(self.words.view(np.uint8), count=self.vocab, bitorder="little")  # (V,) 0 / 1
        if logits.dtype != np.float32:
            np.copyto(logits, -np.inf, where=allowed == 0)
            return
        ban = np.subtract(allowed, 1, dtype=np.int32)  # (V,) -1 (all bits set) where banned, 0 where allowed
        ban &= NEG_INF_BITS  # -inf's bits where banned, 0.0's where allowed
        logits += ban.view(np.float32)  # 3x faster than a masked copy at 24,576 tokens (9 against 25 us)

    def take(self, token: int) -> None:
        """Advance past ``token``; `GenerateError` where the grammar engine stopped (a limit reached)."""
        if self.matcher.is_error() or not self.matcher.consume_token(token):
            raise GenerateError(f"{OPTION}: the grammar engine stopped: {_one_line(self.matcher.get_error())}")


class Grammar:
    """A compiled schema: a matcher at its start, copied for each row that follows it."""

    def __init__(self, matcher: Any, vocab: int) -> None:
        self._start = matcher
        self.vocab = vocab

    def start(self) -> RowGrammar:
        return RowGrammar(self._start.deep_copy(), self.vocab)


class Grammars:
    """Compiles schemas against one bundle's tokenizer (built at the first schema, once per set of end
    tokens) and keeps the last `CACHED` compiled ones. Safe to call from several threads."""

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        self._source = tokenizer  # a `tokenizers.Tokenizer`, or None
        self._vocab = vocab
        self._tokenizers: dict[tuple[int, ...], Any] = {}
        self._compiled: OrderedDict[tuple[str, tuple[int, ...]], Grammar] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, schema: dict[str, Any], eos_ids: tuple[int, ...]) -> Grammar:
        """The grammar of ``schema`` ending in ``eos_ids``, or `GenerateError` (one line) why not."""
        text = json.dumps(schema, sort_keys=True)
        if len(text) > MAX_SCHEMA_CHARS:
            raise GenerateError(
                f"{OPTION}: the schema is {len(text):,} characters as JSON; at most {MAX_SCHEMA_CHARS:,}"
            )
        key = (text, eos_ids)
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                self._compiled.move_to_end(key)
                return found
        grammar = self._build(schema, eos_ids)
        with self._lock:
            self._compiled[key] = grammar
            while len(self._compiled) > CACHED:
                self._compiled.popitem(last=False)
        return grammar

    def _build(self, schema: dict[str, Any], eos_ids: tuple[int, ...]) -> Grammar:
        if self._source is None:
            raise GenerateError(f"{OPTION}: this bundle has no tokenizer.json to build a grammar over")
        if not eos_ids:
            raise GenerateError(f"{OPTION}: the model has no end token to finish a document with")
        try:
            import llguidance
        except ImportError:
            raise GenerateError(f"{OPTION}: needs llguidance (pip install llguidance)") from None
        own = schema.get("x-guidance")
        chosen = isinstance(own, dict) and ("whitespace_flexible" in own or "whitespace_pattern" in own)
        defaults = {} if chosen else {"whitespace_pattern": WHITESPACE}
        try:
            source = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=defaults)
        except (ValueError, TypeError) as err:
            raise GenerateError(f"{OPTION}: {_one_line(err)}") from None
        limits = llguidance.LLParserLimits(verbose_errors=False)  # errors name the problem, not the whole grammar
        matcher = llguidance.LLMatcher(self._tokenizer(eos_ids), source, log_level=0, limits=limits)
        if not matcher.is_error():
            matcher.compute_bitmask()  # the first step's mask: a schema too complex to start fails here
        if matcher.is_error():
            raise GenerateError(f"{OPTION}: the schema cannot be followed: {_one_line(matcher.get_error())}")
        return Grammar(matcher, self._vocab)

    def _tokenizer(self, eos_ids: tuple[int, ...]) -> Any:
        import llguidance

        with self._lock:
            found = self._tokenizers.get(eos_ids)
            if found is None:
                try:
                    found = llguidance.LLTokenizer(self._source.to_str(), n_vocab=self._vocab, eos_token=list(eos_ids))
                except (ValueError, TypeError, RuntimeError) as err:
                    message = f"{OPTION}: the grammar engine cannot read this bundle's tokenizer ({_one_line(err)})"
                    raise GenerateError(message) from None
                self._tokenizers[eos_ids] = found
            return found


def grammar_problem(opts: GenerationSpec, seq2seq: bool, drafting: bool) -> str | None:
    """Why ``opts.json_schema`` cannot be followed with these options, or None: an encoder-decoder (its
    first token may be forced); beams; bans that could leave a row no allowed token (the end token
    banned by a minimum length where only it may come, n-gram bans); decoding that is not one token
    per step (a draft bundle, prompt lookup) or reads its context anew (``slide_context``)."""
    if seq2seq:
        return "is followed by decoder-only bundles (an encoder-decoder's first token may be fixed)"
    if opts.num_beams > 1:
        return "is not followed in beam search"
    if opts.min_new_tokens:
        return "cannot be combined with a minimum length (min_new_tokens; min_tokens or ignore_eos in the server)"
    if opts.no_repeat_ngram_size:
        return "cannot be combined with no_repeat_ngram_size (it could ban the only token the schema allows)"
    if drafting:
        return "cannot be combined with speculative decoding (a draft bundle)"
    if opts.prompt_lookup_num_tokens:
        return "cannot be combined with prompt lookup (prompt_lookup_num_tokens)"
    if opts.slide_context:
        return "cannot be combined with slide_context"
    return None


def _one_line(err: object) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")
