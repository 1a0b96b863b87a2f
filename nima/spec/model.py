"""`ModelSpec`: the whole architecture in one validated object, plus its cross-field rules.

Field types and ranges are Pydantic's job; rules that tie fields together live in
`rule_problems`, which returns every broken rule with its field path so that a bad file
reports all its errors at once. Derived values (head_dim, layer counts) are properties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from nima.spec.base import Strict, no_bool_number_mixups
from nima.spec.generation import GenerationSpec, option_annotations
from nima.spec.sections import AttentionSpec, DropoutSpec, TrainingSpec
from nima.spec.variants import (
    FfnSpec,
    InitSpec,
    LayerNormSpec,
    NormalInit,
    NormSpec,
    PositionSpec,
    RopePosition,
)

SPEC_VERSION = 1
# Upper bounds far past any real model (Gemma's 256k vocabulary, Llama 3.1 405B's 16k width and 126
# layers, million-token contexts): a size beyond them is a typo, and figures of it overflow floats.
MAX_VOCAB, MAX_CONTEXT, MAX_WIDTH, MAX_LAYERS = 2**24, 2**22, 2**16, 1024

Architecture = Literal["decoder", "encoder-decoder"]


@dataclass(frozen=True)
class StackShape:
    """One stack of blocks in a model of some architecture: what the figures and the builders need."""

    name: str  # "decoder", "encoder"
    layers: int
    causal: bool  # each position sees only earlier ones
    cross: bool  # each block also attends to the encoder's output


# architecture -> the stacks its models are made of, in the order the model takes them. The one
# place the spec says what a family is; every layer (figures, builders, export, training, runtime)
# has its own table keyed the same way, and a test holds all their keys equal to `Architecture`.
ARCHITECTURES: dict[str, Callable[[ModelSpec], tuple[StackShape, ...]]] = {
    "decoder": lambda spec: (StackShape("decoder", spec.n_layers, causal=True, cross=False),),
    "encoder-decoder": lambda spec: (
        StackShape("encoder", spec.n_encoder_layers or spec.n_layers, causal=False, cross=False),
        StackShape("decoder", spec.n_layers, causal=True, cross=True),
    ),
}


class ModelSpec(Strict):
    """A transformer language model: a causal decoder (GPT style) or an encoder-decoder."""

    spec_version: int = Field(SPEC_VERSION, description="Version of the spec format.")
    name: str = Field(
        "model",
        min_length=1,
        description="Model name, used in summaries and bundles; nima train without -o writes to runs/<name>, "
        "which needs a name without '/', '\\', control characters, or '.' / '..' alone.",
    )
    architecture: Architecture = Field(
        "decoder", description="decoder (causal LM) | encoder-decoder (encoder + cross-attending decoder)."
    )
    vocab_size: int = Field(gt=0, le=MAX_VOCAB, description="Tokens in the vocabulary (shared by encoder and decoder).")
    max_seq_len: int = Field(gt=0, le=MAX_CONTEXT, description="Longest sequence (per side for encoder-decoder).")
    d_model: int = Field(gt=0, le=MAX_WIDTH, description="Width of the residual stream.")
    n_layers: int = Field(gt=0, le=MAX_LAYERS, description="Blocks in the decoder stack.")
    n_encoder_layers: int | None = Field(
        None, gt=0, le=MAX_LAYERS, description="Blocks in the encoder stack (encoder-decoder only); omitted: n_layers."
    )
    attention: AttentionSpec = Field(description="Self- (and cross-) attention settings.")
    ffn: FfnSpec = Field(description="Feed-forward network.")
    position: PositionSpec = Field(description="Position scheme.")
    norm: NormSpec = Field(default_factory=LayerNormSpec, description="Normalisation layers.")
    bias: bool = Field(True, description="Biases in linear layers and LayerNorms.")
    tie_embeddings: bool = Field(True, description="Share the output projection with the token embedding.")
    scale_embeddings: bool = Field(
        False, description="Multiply token embeddings by sqrt(d_model) (original transformer, Gemma)."
    )
    output_scale: float = Field(
        1.0,
        gt=0.0,
        description="The last hidden state is multiplied by this before the output head (T5 with a tied head: "
        "d_model^-0.5).",
    )
    output_bias: bool = Field(
        False, description="A learned bias added to the logits (BART's and Marian's final_logits_bias)."
    )
    logit_softcap: float | None = Field(
        None, gt=0.0, description="Soft-cap the logits: cap * tanh(logits / cap) (Gemma 2: 30); omitted: none."
    )
    dropout: DropoutSpec = Field(default_factory=DropoutSpec, description="Dropout probabilities.")
    init: InitSpec = Field(default_factory=NormalInit, description="Weight initialisation.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training defaults.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding defaults.")

    @field_validator("generation", mode="before")
    @classmethod
    def _generation_mixups(cls, value: Any) -> Any:
        """The sections' rule against booleans for numbers and numbers for booleans (`Strict`), for the
        generation section, a dataclass that has no validators of its own."""
        return no_bool_number_mixups(value, option_annotations())

    # --- derived values ---------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.attention.head_dim or self.d_model // self.attention.n_heads

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads after resolving the default."""
        return self.attention.n_kv_heads or self.attention.n_heads

    @property
    def stacks(self) -> tuple[StackShape, ...]:
        """The stacks of blocks this architecture is made of (`ARCHITECTURES`)."""
        return ARCHITECTURES[self.architecture](self)

    @property
    def is_encoder_decoder(self) -> bool:
        return self.architecture == "encoder-decoder"

    @property
    def encoder_layers(self) -> int:
        """Blocks in the encoder stack (0 for a decoder-only model)."""
        return sum(stack.layers for stack in self.stacks if stack.name == "encoder")

    @property
    def total_layers(self) -> int:
        """Blocks in all stacks."""
        return sum(stack.layers for stack in self.stacks)

    @property
    def train_seq_len(self) -> int:
        return self.training.seq_len or self.max_seq_len

    # --- cross-field rules ------------------------------------------------------------------

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> ModelSpec:
        # `load_spec` validates with context={"defer_rules": True} and reports each rule with
        # its own field path; direct construction gets them joined into one error.
        if info.context and info.context.get("defer_rules"):
            return self
        problems = rule_problems(self)
        if problems:
            raise ValueError("; ".join(f"{loc}: {msg}" for loc, msg in problems))
        return self


def rule_problems(spec: ModelSpec) -> list[tuple[str, str]]:
    """Every cross-field rule the spec breaks, as (field path, message) pairs."""
    problems: list[tuple[str, str]] = []
    att = spec.attention
    if att.head_dim is None and spec.d_model % att.n_heads:
        problems.append(
            ("attention.n_heads", f"{att.n_heads} does not divide d_model {spec.d_model} (or set attention.head_dim)")
        )
    kv = spec.n_kv_heads
    if kv > att.n_heads:
        problems.append(("attention.n_kv_heads", f"{kv} is more than n_heads {att.n_heads}"))
    elif att.n_heads % kv:
        problems.append(("attention.n_kv_heads", f"{kv} does not divide n_heads {att.n_heads}"))
    # head_dim is only meaningful when set explicitly or when n_heads divides d_model (else reported above).
    head_dim_known = att.head_dim is not None or spec.d_model % att.n_heads == 0
    if isinstance(spec.position, RopePosition) and head_dim_known and spec.head_dim % 2:
        origin = "attention.head_dim" if att.head_dim is not None else "d_model / n_heads"
        problems.append(("position.kind", f"rope needs an even head dim, got {spec.head_dim} ({origin})"))
    scaling = getattr(spec.position, "frequency_scaling", None)
    if scaling is not None and scaling.high_freq_factor <= scaling.low_freq_factor:
        problems.append(
            (
                "position.frequency_scaling.high_freq_factor",
                f"{scaling.high_freq_factor} must be larger than low_freq_factor {scaling.low_freq_factor}",
            )
        )
    if spec.position.kind == "sinusoidal" and spec.d_model % 2:
        problems.append(("position.kind", f"sinusoidal needs an even d_model, got {spec.d_model}"))
    for i, pattern in enumerate(att.patterns):
        where = f"attention.pattern.{i}" if isinstance(att.pattern, list) else "attention.pattern"
        if pattern.kind in ("local", "sparse") and pattern.window >= spec.max_seq_len:
            problems.append(
                (
                    f"{where}.window",
                    f"{pattern.window} must be smaller than max_seq_len {spec.max_seq_len} (use pattern kind full "
                    "instead)",
                )
            )
        if pattern.kind == "sparse" and pattern.stride >= spec.max_seq_len:
            problems.append(
                (f"{where}.stride", f"{pattern.stride} must be smaller than max_seq_len {spec.max_seq_len}")
            )
    if isinstance(att.pattern, list) and not att.pattern:
        problems.append(("attention.pattern", "an empty list: give one pattern, or the cycle of them"))
    if spec.n_encoder_layers is not None and not spec.is_encoder_decoder:
        problems.append(("n_encoder_layers", "only an encoder-decoder has an encoder stack"))
    if spec.training.seq_len is not None and spec.training.seq_len > spec.max_seq_len:
        problems.append(("training.seq_len", f"{spec.training.seq_len} is longer than max_seq_len {spec.max_seq_len}"))
    gen = spec.generation
    if gen.num_return_sequences > max(gen.num_beams, 1) and not gen.do_sample:
        problems.append(
            (
                "generation.num_return_sequences",
                f"{gen.num_return_sequences} needs num_beams >= it or do_sample (num_beams is {gen.num_beams})",
            )
        )
    if gen.min_new_tokens > gen.max_new_tokens:
        problems.append(
            ("generation.min_new_tokens", f"{gen.min_new_tokens} is more than max_new_tokens {gen.max_new_tokens}")
        )
    bos = gen.forced_bos_token_id
    forced = [("generation.forced_bos_token_id", bos)] if bos is not None else []
    forced += [(f"generation.forced_eos_token_ids.{i}", tok) for i, tok in enumerate(gen.forced_eos_token_ids)]
    for where, tok in forced:
        if tok >= spec.vocab_size or tok < 0:
            problems.append((where, f"{tok} is outside the vocabulary [0, {spec.vocab_size})"))
    for key in ("decoder_start_token_id", "pad_token_id"):
        tok = getattr(gen, key)
        if tok is not None and tok >= spec.vocab_size:
            problems.append((f"generation.{key}", f"{tok} is outside the vocabulary [0, {spec.vocab_size})"))
        if tok is not None and not spec.is_encoder_decoder:
            problems.append((f"generation.{key}", "only an encoder-decoder reads it"))
    for i, tok in enumerate(gen.eos_token_ids):
        if not 0 <= tok < spec.vocab_size:
            problems.append(
                (f"generation.eos_token_ids.{i}", f"{tok} is outside the vocabulary [0, {spec.vocab_size})")
            )
    return problems
