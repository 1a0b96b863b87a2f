"""What generation does differently per model family: one row per ``spec.architecture``.

A decoder-only model continues its prompts: the prompt is the decoder's first input, and it
must leave room in the context to generate. An encoder-decoder encodes each source once (its
``encoder`` graph), then decodes from the decoder start token with the encoder's outputs fed
at every step (the cache's ``fixed`` inputs). Everything else — sessions, the search loops,
options, text — is the same for both, so `Generator` holds a family and never branches on one.
A test holds this table's keys equal to the spec's architectures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnxruntime as ort

from nima.layout import TokenIds
from nima.runtime.encoder_session import EncoderSession
from nima.runtime.errors import GenerateError
from nima.runtime.rows import Limits, left_pad

Fixed = dict[str, Any] | None  # per-row inputs fed unchanged at every decoder step (`KVCache.fixed`)
OpenSession = Callable[[str], ort.InferenceSession]  # graph role -> a session on it


class DecoderFamily:
    """Prompts continue: the prompt is the decoder's first input."""

    roles = ("decoder",)  # the graphs a bundle of this family holds
    input_word = "prompt"  # what a user gives, in messages
    takes_sources = False

    def open(self, open_session: OpenSession, n_layers: int) -> None:
        """Sessions besides the decoder's (none)."""

    def check_length(self, index: int, length: int, context: int) -> None:
        if length >= context:
            raise GenerateError(f"prompt {index} has {length} tokens: the context is {context}, no room to generate")

    def starts(self, batch: list[list[int]], ids: TokenIds, pad: int) -> tuple[list[list[int]], Fixed]:
        """The decoder's first tokens per row, and the inputs fixed for every step (none)."""
        return [list(prompt) for prompt in batch], None

    def batches(self, starts: list[list[int]], limits: Limits) -> list[list[int]]:
        """Rows decoded together: `Limits.batches` splits a batch whose left padding would pass the context."""
        return limits.batches([len(s) for s in starts])


class EncoderDecoderFamily:
    """Sources are encoded once; the decoder generates from its start token."""

    roles = ("decoder", "encoder")
    input_word = "source"
    takes_sources = True

    def __init__(self) -> None:
        self.encoder: EncoderSession | None = None

    def open(self, open_session: OpenSession, n_layers: int) -> None:
        self.encoder = EncoderSession(open_session("encoder"), n_layers)

    def check_length(self, index: int, length: int, context: int) -> None:
        if length > context:
            raise GenerateError(f"source {index} has {length} tokens: the encoder's context is {context}")

    def starts(self, batch: list[list[int]], ids: TokenIds, pad: int) -> tuple[list[list[int]], Fixed]:
        """The decoder start token per row, and the encoded sources (source mask, cross-attention K/V)."""
        if self.encoder is None or ids.decoder_start is None:
            raise GenerateError("this encoder-decoder bundle has no encoder session or decoder start token")
        source_ids, mask, _ = left_pad(batch, pad)
        fixed = self.encoder.encode(source_ids, mask)  # (B, ...) each
        return [[ids.decoder_start] for _ in batch], fixed

    def batches(self, starts: list[list[int]], limits: Limits) -> list[list[int]]:
        """All rows at once: they start from one token each, and the encoded sources are one batch."""
        return [list(range(len(starts)))]


# architecture -> the family's class (each Generator makes its own: the encoder-decoder's holds a session)
FAMILIES: dict[str, type[DecoderFamily] | type[EncoderDecoderFamily]] = {
    "decoder": DecoderFamily,
    "encoder-decoder": EncoderDecoderFamily,
}
