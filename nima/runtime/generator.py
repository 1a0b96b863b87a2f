"""`Generator`: text in, text out, over an export bundle with ONNX Runtime. No torch.

    from nima.runtime import Generator
    gen = Generator("bundle/")
    print(gen.generate(["To be or not"], max_new_tokens=40, do_sample=True, top_p=0.9)[0].text)
    for piece in gen.stream("To be or not", max_new_tokens=40):
        print(piece, end="", flush=True)

Options default to the bundle spec's ``generation`` section; keyword arguments override them.
"""

from __future__ import annotations

import os
from collections import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from nima.runtime.beam import Hypothesis, beam_steps, finish
from nima.runtime.bundle import read_bundle
from nima.runtime.errors import GenerateError, runtime_errors
from nima.runtime.families import FAMILIES
from nima.runtime.grammar import Grammar, Grammars, RowGrammar, grammar_problem
from nima.runtime.huge_pages import wanted
from nima.runtime.lookup import decode_lookup, lookup_problem
from nima.runtime.options import is_greedy, resolve_options
from nima.runtime.prompts import Prompt, PromptReader
from nima.runtime.results import Completion, Generation
from nima.runtime.rows import FINISH_EOS, FINISH_STOP, Limits, Row, row_rngs
from nima.runtime.search import decode_rows
from nima.runtime.session import DecoderSession, make_session
from nima.runtime.shared_cache import SharedBufferSession
from nima.runtime.slide import slide_on
from nima.runtime.speculative import Pace, decode_speculative, draft_problem
from nima.runtime.text import TextStream, completion_text, cut_at_stop
from nima.spec.generation import GenerationSpec


class _NoDraws:
    """Handed to greedy decoding as its random generator: greedy decoding never draws, and this says so
    loudly if it did. Not a numpy generator, so a process that only decodes greedily never imports
    ``numpy.random`` (6.6 MiB resident, 4 ms)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"greedy decoding used its random generator ({name})")


_NO_DRAWS = cast("np.random.Generator", _NoDraws())


class Generator:
    """Generates from an export bundle; see the module docstring."""

    def __init__(
        self,
        bundle: str | Path,
        provider: str = "cpu",
        threads: int | None = None,
        spin: bool = True,
        huge_pages: bool | None = True,
        draft: str | Path | None = None,
    ) -> None:
        """``draft``: a small decoder bundle of the same tokenizer that proposes tokens for this one to check
        (speculative decoding, `nima.runtime.speculative`); one sequence at a time, greedy or sampled."""
        cores = os.cpu_count() or 1
        if threads is not None and not 1 <= threads <= cores:
            raise GenerateError(
                f"threads: {threads}; give 1 to {cores} (this machine's cores), or leave it unset for all"
            )
        self.bundle = read_bundle(bundle)
        self.spec = self.bundle.spec
        self.tokenizer = self.bundle.tokenizer
        self.token_ids = self.bundle.token_ids  # the manifest's, completed from the tokenizer
        huge_pages = wanted(huge_pages, list(self.bundle.graphs.values())) and provider == "cpu"
        self.huge_pages = huge_pages  # whether the weights were put on 2 MB pages (`nima.runtime.huge_pages`)
        session = make_session(self.bundle.model, provider, threads, spin, huge_pages)
        shape = (self.spec.n_layers, self.spec.n_kv_heads, self.spec.head_dim)
        kind = SharedBufferSession if self.bundle.share_buffer else DecoderSession
        try:
            self.session: DecoderSession = kind(session, *shape)
        except GenerateError as err:  # the graph against nima.json: named with the bundle
            raise GenerateError(f"{self.bundle.path}: {err}") from None
        vocab = session.get_outputs()[0].shape[-1]  # logits (batch, seq, vocab)
        if isinstance(vocab, int) and vocab != self.spec.vocab_size:
            said = f"{self.bundle.path}: nima.json says vocab_size {self.spec.vocab_size}"
            raise GenerateError(f"{said}, the graph's logits have {vocab}: not this graph's spec")
        self.family = FAMILIES[self.spec.architecture]()
        self.family.open(
            lambda role: make_session(self.bundle.graphs[role], provider, threads, spin, huge_pages), self.spec.n_layers
        )
        self.prompts = PromptReader(
            self.tokenizer, self.spec.vocab_size, self.spec.max_seq_len, self.family, self.bundle.path
        )
        self.draft = None if draft is None else self._open_draft(draft, provider, threads, spin, huge_pages)
        self._pace = Pace()  # whether drafting pays, as this generator's rows found (`speculative.Pace`)
        self.grammars = Grammars(self.tokenizer, self.spec.vocab_size)  # json_schema, compiled at first use

    def _open_draft(
        self, draft: str | Path, provider: str, threads: int | None, spin: bool, huge_pages: bool | None
    ) -> Generator:
        """The draft bundle's own generator, checked to fit this one: decoder-only, the same vocabulary."""
        # no spinning: the draft's short runs alternate with the target's, whose threads its spin would slow
        opened = Generator(draft, provider, threads, False, huge_pages)
        if self.is_seq2seq or opened.is_seq2seq:
            raise GenerateError(f"draft {draft}: speculative decoding is for decoder-only bundles")
        if opened.spec.vocab_size != self.spec.vocab_size:
            raise GenerateError(
                f"draft {draft}: vocab_size {opened.spec.vocab_size}, this bundle's {self.spec.vocab_size}: a draft "
                "must share the tokenizer"
            )
        tokenizers = (self.tokenizer, opened.tokenizer)
        if None not in tokenizers and tokenizers[0].get_vocab() != tokenizers[1].get_vocab():  # type: ignore[union-attr]
            raise GenerateError(f"draft {draft}: its tokenizer is not this bundle's")
        return opened

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder bundle: prompts are sources, and generation starts from the decoder start token."""
        return self.family.takes_sources

    def options(self, **overrides: Any) -> GenerationSpec:
        """The bundle's defaults with ``overrides`` applied and checked (`GenerateError` if invalid), against
        the bundle too (end ids in its vocabulary, stop strings with a tokenizer), before any output."""
        opts = resolve_options(self.spec.generation, overrides)
        self._limits(opts)
        if opts.prompt_lookup_num_tokens:
            problem = lookup_problem(opts, self.is_seq2seq)
            if problem:
                raise GenerateError(f"option prompt_lookup_num_tokens: {problem}")
        if self.draft is not None:
            problem = draft_problem(opts, self.is_seq2seq)
            if problem:
                raise GenerateError(f"draft bundle: {problem}")
        if opts.slide_context and (self.is_seq2seq or opts.num_beams > 1):
            what = "an encoder-decoder's decoder" if self.is_seq2seq else "beam search"
            raise GenerateError(f"option slide_context: not for {what}; it reads one decoder-only sequence anew")
        if opts.json_schema is not None:
            self._grammar(opts)
        return opts

    def _grammar(self, opts: GenerationSpec) -> Grammar:
        """The compiled ``json_schema`` of ``opts`` (`GenerateError` where it cannot be followed with them)."""
        assert opts.json_schema is not None
        problem = grammar_problem(opts, self.is_seq2seq, self.draft is not None)
        if problem:
            raise GenerateError(f"option json_schema: {problem}")
        return self.grammars.compile(opts.json_schema, self._eos_ids(opts))

    def row_grammars(self, opts: GenerationSpec, rows: int) -> list[RowGrammar] | None:
        """Each of ``rows`` rows' own place in ``opts.json_schema``, from its start; None without one."""
        if opts.json_schema is None:
            return None
        grammar = self._grammar(opts)
        return [grammar.start() for _ in range(rows)]

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of ``prompt`` (text needs the bundle's tokenizer; id lists pass through, checked)."""
        return self.prompts.encode(prompt)

    def check_prompt(self, prompt: Prompt) -> list[int]:
        """The token ids of one prompt (a source, for encoder-decoders), checked as generation would check
        them (tokenizer, vocabulary, length): a caller that prints the prompt first calls this before."""
        return self.prompts.batch([prompt], None)[0]

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt] | None = None,
        *,
        sources: Prompt | Sequence[Prompt] | None = None,
        **options: Any,
    ) -> list[Generation]:
        """Generate for each prompt (a batch, left-padded); one `Generation` per prompt, in order.

        For an encoder-decoder bundle the inputs are sources (``sources=``, or positionally): each
        is encoded once and the decoder generates from its start token."""
        with runtime_errors(self.bundle.path):
            return self._generate(prompts, sources, options)

    def _generate(
        self, prompts: Prompt | Sequence[Prompt] | None, sources: Prompt | Sequence[Prompt] | None, options: Any
    ) -> list[Generation]:
        opts = self.options(**options)
        batch = self.prompts.batch(prompts, sources)
        limits = self._limits(opts)
        if opts.num_beams > 1:
            return finish(self._beams(batch, opts, limits))
        if self.draft is not None:  # one row at a time: a step checks one row's drafts
            found = []
            for ids in batch:
                row = Row(list(ids))
                for _ in self._speculative(row, limits, opts, self._rng(opts)):  # each prompt draws as it would alone
                    pass
                found.append(Generation(ids, [self._completion(row.prompt, row.tokens, row.finish_reason or "", opts)]))
            return found
        if opts.prompt_lookup_num_tokens:  # one row at a time: a step checks one row's drafts
            found = []
            for ids in batch:
                row = Row(list(ids))
                for _ in decode_lookup(self.session, row, limits, opts.prompt_lookup_num_tokens):
                    pass
                found.append(Generation(ids, [self._completion(row.prompt, row.tokens, row.finish_reason or "", opts)]))
            return found
        copies = opts.num_return_sequences
        starts, fixed = self._starts([ids for ids in batch for _ in range(copies)])
        rows = [Row(ids) for ids in starts]
        greedy = is_greedy(opts)
        # each row's own stream: a prompt gives the same tokens alone or in any batch (`row_rngs`)
        rngs = [_NO_DRAWS] * len(rows) if greedy else row_rngs(opts.seed, [i % copies for i in range(len(rows))])
        places = self.row_grammars(opts, len(rows))
        for group in self._batches(starts, limits, fixed):
            group_rows, group_rngs = [rows[i] for i in group], [rngs[i] for i in group]
            group_places = None if places is None else [places[i] for i in group]
            pad = self._pad_id()
            for _ in decode_rows(self.session, group_rows, opts, limits, group_rngs, pad, greedy, fixed, group_places):
                pass
            if opts.slide_context:  # rows that filled the context go on, one at a time
                for row, rng in zip(group_rows, group_rngs, strict=True):
                    for _ in slide_on(self.session, row, opts, limits, rng, greedy):
                        pass
        return [
            Generation(
                ids, [self._completion(r.prompt, r.tokens, r.finish_reason or "", opts) for r in rows[i : i + copies]]
            )
            for ids, i in zip(batch, range(0, len(rows), copies), strict=True)
        ]

    def beam_steps(
        self,
        prompts: Prompt | Sequence[Prompt] | None = None,
        *,
        sources: Prompt | Sequence[Prompt] | None = None,
        **options: Any,
    ) -> abc.Generator[None, None, list[Generation]]:
        """`generate` with ``num_beams`` > 1, one model step per ``next``; its result is `generate`'s (the
        `StopIteration`'s value). Nothing else may use this generator's session while a step runs, but
        anything may between two: `nima.serve`'s scheduler runs its batch's steps there. Advance it
        inside `runtime_errors` (ONNX Runtime's own errors become `GenerateError`)."""
        with runtime_errors(self.bundle.path):
            opts = self.options(**options)
            if opts.num_beams < 2:
                raise GenerateError("beam_steps: give num_beams of 2 or more")
            batch = self.prompts.batch(prompts, sources)
            limits = self._limits(opts)
        return self._beams(batch, opts, limits)

    def _beams(
        self, batch: list[list[int]], opts: GenerationSpec, limits: Limits
    ) -> abc.Generator[None, None, list[Generation]]:
        """Beam search over ``batch``, stepped (`beam_steps`)."""
        starts, fixed = self._starts(batch)
        found: list[list[Hypothesis]] = [[] for _ in starts]
        for group in self._batches(starts, limits, fixed):
            prompts = [starts[i] for i in group]
            chosen = yield from beam_steps(self.session, prompts, opts, limits, self._pad_id(), fixed)
            for i, hypotheses in zip(group, chosen, strict=True):
                found[i] = hypotheses
        return [
            Generation(ids, [self._completion(start, h.tokens, h.finish_reason, opts, h.score) for h in hypotheses])
            for ids, start, hypotheses in zip(batch, starts, found, strict=True)
        ]

    def _speculative(
        self, row: Row, limits: Limits, opts: GenerationSpec, rng: np.random.Generator
    ) -> abc.Iterator[int]:
        """One row decoded with the draft bundle's proposals (`decode_speculative`)."""
        assert self.draft is not None
        yield from decode_speculative(
            self.session,
            self.draft.session,
            row,
            limits,
            opts,
            rng,
            opts.num_assistant_tokens,
            self.draft.spec.max_seq_len,
            self._pace,
        )

    def stream_tokens(self, prompt: Prompt, **options: Any) -> abc.Generator[int, None, str | None]:
        """Yield one prompt's new token ids as they are chosen (greedy or sampled; a final EOS included).
        The generator's return value (``StopIteration.value``) is the finish reason, as in `Completion`."""
        opts = self.options(**options)
        if opts.num_beams > 1 or opts.num_return_sequences > 1:
            raise GenerateError("stream: one sequence at a time (beam search knows its best beam only at the end)")
        inputs = self.prompts.batch([prompt], None)
        limits = self._limits(opts)
        greedy = is_greedy(opts)
        with runtime_errors(self.bundle.path):  # the encoder's run too (encoder-decoders)
            starts, fixed = self._starts(inputs)
            row = Row(starts[0])
            if opts.prompt_lookup_num_tokens:
                yield from decode_lookup(self.session, row, limits, opts.prompt_lookup_num_tokens)
                return row.finish_reason
            if self.draft is not None:
                yield from self._speculative(row, limits, opts, self._rng(opts))
                return row.finish_reason
            rng = self._rng(opts)
            places = self.row_grammars(opts, 1)
            for _ in decode_rows(self.session, [row], opts, limits, [rng], self._pad_id(), greedy, fixed, places):
                yield row.tokens[-1]
            if opts.slide_context:
                yield from slide_on(self.session, row, opts, limits, rng, greedy)
        return row.finish_reason

    def stream(self, prompt: Prompt, **options: Any) -> abc.Generator[str, None, str | None]:
        """Yield the text of one prompt's continuation as it is generated (greedy or sampled); the
        generator returns the finish reason (``StopIteration.value``), as `stream_tokens` does."""
        opts = self.options(**options)
        if self.tokenizer is None:
            raise GenerateError("stream: this bundle has no tokenizer.json to turn tokens into text")
        before = [] if self.is_seq2seq else self.check_prompt(prompt)  # a decoder's output follows no text
        text = TextStream(self.tokenizer, opts.stop_strings, before)
        tokens: list[int] = []
        eos = self._eos_ids(opts)
        chosen = self.stream_tokens(before or prompt, **options)  # a decoder's prompt as the ids it has already
        while True:
            try:
                token = next(chosen)
            except StopIteration as done:
                reason = done.value
                break
            tokens.append(token)
            if token in eos:
                reason = FINISH_EOS
                break
            piece = text.push(token)
            if piece:
                yield piece
        final = completion_text(self.tokenizer, before, [t for t in tokens if t not in eos])
        rest = text.finish(cut_at_stop(final, opts.stop_strings)[0])
        if rest:
            yield rest
        return reason

    # --- helpers ------------------------------------------------------------------------------

    def _starts(self, batch: list[list[int]]) -> tuple[list[list[int]], dict[str, Any] | None]:
        """The decoder's starting tokens per row and its fixed inputs (`nima.runtime.families`)."""
        return self.family.starts(batch, self.token_ids, self._pad_id())

    def _batches(self, starts: list[list[int]], limits: Limits, fixed: dict[str, Any] | None) -> list[list[int]]:
        """The rows decoded together (`nima.runtime.families`)."""
        return self.family.batches(starts, limits)

    def _eos_ids(self, opts: GenerationSpec) -> tuple[int, ...]:
        if opts.eos_token_ids:
            bad = [t for t in opts.eos_token_ids if not 0 <= t < self.spec.vocab_size]
            if bad:
                vocab = f"0..{self.spec.vocab_size - 1}"
                raise GenerateError(f"option eos_token_ids: {bad[0]} is outside the vocabulary ({vocab})")
            return tuple(opts.eos_token_ids)
        return () if self.token_ids.eos is None else (self.token_ids.eos,)

    def _limits(self, opts: GenerationSpec) -> Limits:
        if opts.stop_strings and self.tokenizer is None:
            raise GenerateError("option stop_strings: this bundle has no tokenizer.json to read text with")
        for i, stop in enumerate(opts.stop_strings):
            if not stop.isascii():
                try:
                    stop.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate: no text the tokenizer decodes contains it
                    raise GenerateError(f"option stop_strings: item {i} is not valid Unicode text ({stop!r})") from None
        tokenizer = self.tokenizer
        decode = None if tokenizer is None else lambda before, tokens: completion_text(tokenizer, before, tokens)
        return Limits(self._eos_ids(opts), opts.max_new_tokens, self.spec.max_seq_len, tuple(opts.stop_strings), decode)

    def _pad_id(self) -> int:
        for candidate in (self.token_ids.pad, self.token_ids.eos):
            if candidate is not None:
                return candidate
        return 0  # any id serves: padded positions are masked out

    def _rng(self, opts: GenerationSpec) -> np.random.Generator:
        """The generator sampling draws from; greedy decoding draws nothing, so it gets a shared
        one without reading the OS's entropy (10-40 µs before the first token)."""
        if is_greedy(opts):
            return _NO_DRAWS
        return np.random.default_rng(opts.seed)

    def _completion(
        self, before: list[int], tokens: list[int], reason: str, opts: GenerationSpec, score: float | None = None
    ) -> Completion:
        """``tokens`` generated after ``before`` (the decoder's starting tokens: a prompt, or a start token)."""
        text = None
        if self.tokenizer is not None:
            shown = tokens[:-1] if reason == FINISH_EOS else tokens
            text = completion_text(self.tokenizer, before, shown)
            if reason == FINISH_STOP:
                text = cut_at_stop(text, opts.stop_strings)[0]
        return Completion(list(tokens), text, reason, score)
