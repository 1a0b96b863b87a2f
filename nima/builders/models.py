"""The two model families: a causal decoder LM and an encoder-decoder (seq2seq) LM.

Both return their KV caches so that cached decoding, the ONNX export and the runtime share
one code path: pass the returned ``presents`` back as ``past_key_values`` with the new
tokens and an attention mask covering past + new tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from nima.builders.attention import KV
from nima.builders.stack import Stack


class _LanguageModel(nn.Module):
    """Token embedding and output head shared by both families."""

    def __init__(
        self,
        embedding: nn.Embedding,
        head: nn.Linear,
        tie: bool,
        embed_scale: float,
        output_scale: float = 1.0,
        logit_softcap: float | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.head = head  # with a bias where the logits have one (BART's final_logits_bias)
        if tie:
            self.head.weight = self.embedding.weight
        self.embed_scale = embed_scale
        self.output_scale = output_scale
        self.logit_softcap = logit_softcap

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embedding(input_ids)  # (B, T, d_model)
        return h * self.embed_scale if self.embed_scale != 1.0 else h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The output head on final hidden states (..., d_model) -> (..., vocab), scaled first where the
        spec says (T5's tied head reads h * d_model^-0.5), soft-capped after where it says (Gemma 2)."""
        logits = self.head(h * self.output_scale if self.output_scale != 1.0 else h)
        if self.logit_softcap is not None:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits

    def stacks(self) -> list[Stack]:
        return [m for m in self.modules() if isinstance(m, Stack)]

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass (saves memory, costs ~1/3 time)."""
        for stack in self.stacks():
            stack.gradient_checkpointing = enabled


class DecoderLM(_LanguageModel):
    """GPT-style causal language model."""

    def __init__(
        self,
        embedding: nn.Embedding,
        decoder: Stack,
        head: nn.Linear,
        tie: bool,
        embed_scale: float,
        output_scale: float = 1.0,
        logit_softcap: float | None = None,
    ) -> None:
        super().__init__(embedding, head, tie, embed_scale, output_scale, logit_softcap)
        self.decoder = decoder

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) int64
        attention_mask: torch.Tensor | None = None,  # (B, P+T), 1 = real token
        position_ids: torch.Tensor | None = None,  # (B, T); default: from attention_mask
        past_key_values: list[KV] | None = None,  # per layer, (B, H_kv, P, hd) each
    ) -> tuple[torch.Tensor, list[KV]]:
        """Logits (B, T, vocab) and the updated cache (per layer, (B, H_kv, P+T, hd) each)."""
        h, presents, _ = self.decoder(self.embed(input_ids), attention_mask, position_ids, past_key_values)
        return self.logits(h), presents


class EncoderDecoderLM(_LanguageModel):
    """Encoder-decoder (original transformer, T5): the decoder cross-attends to the encoder output."""

    def __init__(
        self,
        embedding: nn.Embedding,
        encoder: Stack,
        decoder: Stack,
        head: nn.Linear,
        tie: bool,
        embed_scale: float,
        output_scale: float = 1.0,
        logit_softcap: float | None = None,
    ) -> None:
        super().__init__(embedding, head, tie, embed_scale, output_scale, logit_softcap)
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder hidden states (B, S, d_model) for source ids (B, S)."""
        h, _, _ = self.encoder(self.embed(input_ids), attention_mask)
        return h

    def decode(
        self,
        decoder_input_ids: torch.Tensor,  # (B, T)
        encoder_hidden: torch.Tensor | None = None,  # (B, S, d_model); not needed with cross_key_values
        encoder_attention_mask: torch.Tensor | None = None,  # (B, S)
        decoder_attention_mask: torch.Tensor | None = None,  # (B, P+T)
        decoder_position_ids: torch.Tensor | None = None,  # (B, T)
        past_key_values: list[KV] | None = None,  # self-attention cache
        cross_key_values: list[KV] | None = None,  # cross-attention keys/values, computed once
    ) -> tuple[torch.Tensor, list[KV], list[KV]]:
        """Logits (B, T, vocab), the self-attention cache, and the cross-attention keys/values."""
        h, presents, cross = self._decode_hidden(
            decoder_input_ids,
            encoder_hidden,
            encoder_attention_mask,
            decoder_attention_mask,
            decoder_position_ids,
            past_key_values,
            cross_key_values,
        )
        return self.logits(h), presents, cross

    def _decode_hidden(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_hidden: torch.Tensor | None,
        encoder_attention_mask: torch.Tensor | None,
        decoder_attention_mask: torch.Tensor | None,
        decoder_position_ids: torch.Tensor | None,
        past_key_values: list[KV] | None,
        cross_key_values: list[KV] | None,
    ) -> tuple[torch.Tensor, list[KV], list[KV]]:
        """The decoder's final hidden states (B, T, d_model) and both caches (see `decode`)."""
        h, presents, cross = self.decoder(
            self.embed(decoder_input_ids),
            decoder_attention_mask,
            decoder_position_ids,
            past_key_values,
            memory=encoder_hidden,
            memory_mask=encoder_attention_mask,
            memory_key_values=cross_key_values,
        )
        assert cross is not None  # every decoder block of this family has cross-attention
        return h, presents, cross

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S) source
        decoder_input_ids: torch.Tensor,  # (B, T) target (shifted right)
        attention_mask: torch.Tensor | None = None,  # (B, S)
        decoder_attention_mask: torch.Tensor | None = None,  # (B, T)
        logits_mask: torch.Tensor | None = None,  # (B, T) bool: where logits are wanted
    ) -> tuple[torch.Tensor, list[KV], list[KV]]:
        """Logits (B, T, vocab), or (N, vocab) at the N positions of ``logits_mask``; both caches.

        Training passes the mask of real target tokens: with a large vocabulary the output
        head is most of a step's work, and padding positions would only be thrown away by
        the loss.
        """
        memory = self.encode(input_ids, attention_mask)
        h, presents, cross = self._decode_hidden(
            decoder_input_ids, memory, attention_mask, decoder_attention_mask, None, None, None
        )  # (B, T, d_model)
        if logits_mask is not None:
            h = h[logits_mask]  # (N, d_model)
        return self.logits(h), presents, cross


# architecture -> model class; each takes (embedding, *stacks in `ModelSpec.stacks` order, head, tie, embedding
# scale, output scale, logit soft-cap).
MODELS: dict[str, type[DecoderLM] | type[EncoderDecoderLM]] = {
    "decoder": DecoderLM,
    "encoder-decoder": EncoderDecoderLM,
}
