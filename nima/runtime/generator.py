"""`Generator`: text in, text out, over an export bundle with ONNX Runtime. No torch.

    from nima.runtime import Generator
    gen = Generator("bundle/")
    print(gen.generate(["To be or not"], max_new_tokens=40, do_sample=True, top_p=0.9)[0].text)
    for piece in gen.stream("To be or not", max_new_tokens=40):
        print(piece, end="", flush=True)

Options default to the bundle spec's ``generation`` section; keyword arguments override them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nima.runtime.beam import beam_search
from nima.runtime.bundle import read_bundle
from nima.runtime.errors import GenerateError
from nima.runtime.options import is_greedy, resolve_options
from nima.runtime.rows import FINISH_EOS, FINISH_STOP, Limits, Row
from nima.runtime.search import decode_rows
from nima.runtime.session import DecoderSession, make_session
from nima.runtime.text import TextStream, cut_at_stop, special_ids
from nima.spec.sections import GenerationSpec

Prompt = str | Sequence[int]


@dataclass(frozen=True)
class Completion:
    """One generated sequence: its new tokens, their text (None without a tokenizer), why it ended
    ("eos", "stop" or "length") and, for beam search, its length-normalised score."""

    token_ids: list[int]
    text: str | None
    finish_reason: str
    score: float | None = None


@dataclass(frozen=True)
class Generation:
    """Everything generated for one prompt: ``num_return_sequences`` completions, best first."""

    prompt_ids: list[int]
    completions: list[Completion]

    @property
    def text(self) -> str | None:
        return self.completions[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.completions[0].token_ids


class Generator:
    """Generates from an export bundle; see the module docstring."""

    def __init__(
        self, bundle: str | Path, provider: str = "cpu", threads: int | None = None, spin: bool = False
    ) -> None:
        self.bundle = read_bundle(bundle)
        self.spec = self.bundle.spec
        self.tokenizer = self.bundle.tokenizer
        self.special = special_ids(self.tokenizer)
        session = make_session(self.bundle.model, provider, threads, spin)
        self.session = DecoderSession(session, self.spec.n_layers, self.spec.n_kv_heads, self.spec.head_dim)

    def options(self, **overrides: Any) -> GenerationSpec:
        """The bundle's defaults with ``overrides`` applied and checked (`GenerateError` if invalid)."""
        return resolve_options(self.spec.generation, overrides)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of ``prompt`` (text needs the bundle's tokenizer; id lists pass through, checked)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GenerateError("this bundle has no tokenizer.json: give prompts as token ids")
            return list(self.tokenizer.encode(prompt).ids)
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < self.spec.vocab_size]
        if bad:
            raise GenerateError(f"prompt token id {bad[0]} is outside the vocabulary (0..{self.spec.vocab_size - 1})")
        return ids

    def generate(self, prompts: Prompt | Sequence[Prompt], **options: Any) -> list[Generation]:
        """Generate for each prompt (a batch, left-padded); one `Generation` per prompt, in order."""
        opts = self.options(**options)
        batch = self._prompt_ids(prompts)
        limits = self._limits(opts)
        if opts.num_beams > 1:
            found = beam_search(self.session, batch, opts, limits, self._pad_id())
            return [
                Generation(ids, [self._completion(h.tokens, h.finish_reason, opts, h.score) for h in hypotheses])
                for ids, hypotheses in zip(batch, found, strict=True)
            ]
        copies = opts.num_return_sequences
        rows = [Row(list(ids)) for ids in batch for _ in range(copies)]
        for _ in decode_rows(self.session, rows, opts, limits, self._rng(opts), self._pad_id(), is_greedy(opts)):
            pass
        return [
            Generation(ids, [self._completion(r.tokens, r.finish_reason or "", opts) for r in rows[i : i + copies]])
            for ids, i in zip(batch, range(0, len(rows), copies), strict=True)
        ]

    def stream_tokens(self, prompt: Prompt, **options: Any) -> Iterator[int]:
        """Yield one prompt's new token ids as they are chosen (greedy or sampled; a final EOS included)."""
        opts = self.options(**options)
        if opts.num_beams > 1 or opts.num_return_sequences > 1:
            raise GenerateError("stream: one sequence at a time (beam search knows its best beam only at the end)")
        row = Row(self._prompt_ids([prompt])[0])
        limits = self._limits(opts)
        for _ in decode_rows(self.session, [row], opts, limits, self._rng(opts), self._pad_id(), is_greedy(opts)):
            yield row.tokens[-1]

    def stream(self, prompt: Prompt, **options: Any) -> Iterator[str]:
        """Yield the text of one prompt's continuation as it is generated (greedy or sampled)."""
        opts = self.options(**options)
        if self.tokenizer is None:
            raise GenerateError("stream: this bundle has no tokenizer.json to turn tokens into text")
        text = TextStream(self.tokenizer, opts.stop_strings)
        tokens: list[int] = []
        eos = self._eos_ids(opts)
        for token in self.stream_tokens(prompt, **options):
            tokens.append(token)
            if token in eos:
                break
            piece = text.push(token)
            if piece:
                yield piece
        final = self._decode([t for t in tokens if t not in eos])
        rest = text.finish(cut_at_stop(final, opts.stop_strings)[0])
        if rest:
            yield rest

    # --- helpers ------------------------------------------------------------------------------

    def _prompt_ids(self, prompts: Prompt | Sequence[Prompt]) -> list[list[int]]:
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int | np.integer))
        batch = [self.encode(p) for p in ([prompts] if single else prompts)]  # type: ignore[list-item]
        if not batch:
            raise GenerateError("no prompts given")
        for i, ids in enumerate(batch):
            if not ids:
                raise GenerateError(f"prompt {i} is empty: the model needs at least one token to continue")
            if len(ids) >= self.spec.max_seq_len:
                raise GenerateError(
                    f"prompt {i} has {len(ids)} tokens: the context is {self.spec.max_seq_len}, no room to generate"
                )
        return batch

    def _eos_ids(self, opts: GenerationSpec) -> tuple[int, ...]:
        if opts.eos_token_ids:
            return tuple(opts.eos_token_ids)
        return () if self.special.eos is None else (self.special.eos,)

    def _limits(self, opts: GenerationSpec) -> Limits:
        if opts.stop_strings and self.tokenizer is None:
            raise GenerateError("option stop_strings: this bundle has no tokenizer.json to read text with")
        decode = None if self.tokenizer is None else self._decode
        return Limits(self._eos_ids(opts), opts.max_new_tokens, self.spec.max_seq_len, tuple(opts.stop_strings), decode)

    def _pad_id(self) -> int:
        for candidate in (self.special.pad, self.special.eos):
            if candidate is not None:
                return candidate
        return 0  # any id serves: padded positions are masked out

    def _rng(self, opts: GenerationSpec) -> np.random.Generator:
        return np.random.default_rng(opts.seed)

    def _decode(self, tokens: list[int]) -> str:
        assert self.tokenizer is not None  # only called when there is one
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _completion(
        self, tokens: list[int], reason: str, opts: GenerationSpec, score: float | None = None
    ) -> Completion:
        text = None
        if self.tokenizer is not None:
            shown = tokens[:-1] if reason == FINISH_EOS else tokens
            text = self._decode(shown)
            if reason == FINISH_STOP:
                text = cut_at_stop(text, opts.stop_strings)[0]
        return Completion(list(tokens), text, reason, score)
