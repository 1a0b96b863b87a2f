"""The variant families of a spec: attention pattern, FFN, position scheme, norm and init.

Each family is a Pydantic discriminated union keyed by ``kind``; every field lives on the
variant that uses it, so ``theta`` on an ALiBi position is an error, not a silent no-op.
Where a family has a default variant, a section may leave ``kind`` out (`default_kind`).
The builders map each ``kind`` to a module through one closed table per family, and a test
holds the table's keys equal to the kinds listed here (`variant_kinds`); tests that cover
every variant take their lists from `variant_examples`, each variant's smallest valid form.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag

from nima.spec.base import Strict, default_kind

# --- attention pattern ---------------------------------------------------------------------


class FullPattern(Strict):
    """Every query attends to every allowed key (all earlier tokens in a causal stack)."""

    kind: Literal["full"] = Field("full", description="Dense attention over all allowed keys.")


class LocalPattern(Strict):
    """Sliding-window attention (Longformer / Mistral style): keys within ``window`` tokens."""

    example: ClassVar[dict[str, Any]] = {"window": 3}
    kind: Literal["local"] = Field(description="Sliding-window attention.")
    window: int = Field(
        gt=0, description="Keys at distance < window from the query are visible (the query itself included)."
    )


class SparsePattern(Strict):
    """Fixed sparse pattern (Sparse Transformer, strided): a local window plus every stride-th key.

    A query at i sees key j when ``|i - j| < window`` or ``|i - j| % stride == 0``. Both terms
    depend only on the distance, so left padding never changes what a real token sees.
    """

    example: ClassVar[dict[str, Any]] = {"window": 2, "stride": 3}
    kind: Literal["sparse"] = Field(description="Local window plus strided keys.")
    window: int = Field(gt=0, description="Width of the local band, in tokens (query included).")
    stride: int = Field(gt=1, description="Keys whose distance from the query is a multiple of stride.")


AttentionPattern = Annotated[FullPattern | LocalPattern | SparsePattern, Field(discriminator="kind")]

# One pattern for every layer, or a list cycled over the layers; chosen by the value's shape, so an error
# names the field it is in (``attention.pattern.window``, ``attention.pattern.1.window``), not both readings.
ONE_OR_CYCLE_TAGS = ("one", "cycle")


def _one_or_cycle(value: Any) -> str:
    return "cycle" if isinstance(value, list) else "one"


PatternOrCycle = Annotated[
    Annotated[AttentionPattern, Tag("one")] | Annotated[list[AttentionPattern], Tag("cycle")],
    Discriminator(_one_or_cycle),
]


# --- feed-forward -------------------------------------------------------------------------


class _Ffn(Strict):
    """What every FFN variant has: the inner width."""

    gated: ClassVar[bool] = False  # a third (gate) projection: W2 (act(Wg x) * W1 x)
    kind: str  # each variant narrows it to its Literal (declared here so that it is dumped first)
    hidden: int = Field(gt=0, le=2**20, description="Inner width of the FFN (4*d_model is the classic choice).")


class ReluFfn(_Ffn):
    """``W2 relu(W1 x)``: the original transformer."""

    kind: Literal["relu"] = Field(description="Two-layer MLP with ReLU.")


class _GeluFfn(_Ffn):
    """What the GELU variants add: which GELU."""

    approximate: Literal["none", "tanh"] = Field(
        "none",
        description="none: exact GELU, 0.5 x (1 + erf(x / sqrt 2)); tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + "
        "0.044715 x^3))), the approximation GPT-2 ('gelu_new') and Gemma ('gelu_pytorch_tanh') were trained with.",
    )


class GeluFfn(_GeluFfn):
    """``W2 gelu(W1 x)``: GPT-2, BERT."""

    kind: Literal["gelu"] = Field("gelu", description="Two-layer MLP with GELU.")


class SiluFfn(_Ffn):
    """``W2 silu(W1 x)``: the plain MLP with a SiLU (swish) activation (Marian)."""

    kind: Literal["silu"] = Field(description="Two-layer MLP with SiLU (swish).")


class GluFfn(_Ffn):
    """``W2 (sigmoid(Wg x) * W1 x)``: the gated linear unit (Dauphin et al. 2017; Shazeer 2020)."""

    gated: ClassVar[bool] = True
    kind: Literal["glu"] = Field(description="Gated linear unit with a sigmoid gate.")


class SwigluFfn(_Ffn):
    """``W2 (silu(Wg x) * W1 x)``: LLaMA, Mistral, Qwen (Shazeer 2020)."""

    gated: ClassVar[bool] = True
    kind: Literal["swiglu"] = Field(description="Gated linear unit with a SiLU (swish) gate.")


class GegluFfn(_GeluFfn):
    """``W2 (gelu(Wg x) * W1 x)``: T5 v1.1 (Shazeer 2020)."""

    gated: ClassVar[bool] = True
    kind: Literal["geglu"] = Field(description="Gated linear unit with a GELU gate.")


FfnSpec = Annotated[
    ReluFfn | GeluFfn | SiluFfn | GluFfn | SwigluFfn | GegluFfn, Field(discriminator="kind"), default_kind("gelu")
]


# --- position schemes -------------------------------------------------------------------------


class SinusoidalPosition(Strict):
    """Fixed sine/cosine absolute positions added to the embeddings (Vaswani et al. 2017)."""

    kind: Literal["sinusoidal"] = Field(description="Fixed sinusoidal absolute positions.")
    base: float = Field(10000.0, gt=1.0, description="Wavelength base of the sinusoids.")
    layout: Literal["interleaved", "split"] = Field(
        "interleaved",
        description="interleaved: sin(p w_i) at 2i, cos(p w_i) at 2i+1 (the paper); split: the d/2 sines, then the d/2 "
        "cosines (tensor2tensor, fairseq, Marian).",
    )


class LearnedPosition(Strict):
    """A learned absolute position embedding table with max_seq_len rows (GPT-2)."""

    kind: Literal["learned"] = Field(description="Learned absolute position embeddings.")
    offset: int = Field(
        0,
        ge=0,
        le=2**16,
        description="Rows before position 0: the table has max_seq_len + offset rows and position p reads row "
        "p + offset (BART: 2).",
    )


class RelativePosition(Strict):
    """T5-style bucketed relative position bias, one learned scalar per (bucket, head)."""

    kind: Literal["relative"] = Field(description="T5 relative position bias.")
    num_buckets: int = Field(32, gt=1, description="Number of relative-distance buckets.")
    max_distance: int = Field(128, gt=1, description="Distances at or beyond this share the last bucket.")


class Llama3Frequencies(Strict):
    """Llama 3.1's RoPE frequency scaling: frequencies whose wavelength passes ``original_max_seq_len /
    low_freq_factor`` are divided by ``factor``, those under ``original_max_seq_len / high_freq_factor``
    kept, and those between interpolated smoothly."""

    example: ClassVar[dict[str, Any]] = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_seq_len": 16,
    }
    kind: Literal["llama3"] = Field(description="Llama 3.1's frequency scaling.")
    factor: float = Field(gt=0.0, description="What the low frequencies are divided by (8 in Llama 3.1).")
    low_freq_factor: float = Field(gt=0.0, description="Wavelengths past original_max_seq_len / this are divided.")
    high_freq_factor: float = Field(gt=0.0, description="Wavelengths under original_max_seq_len / this are kept.")
    original_max_seq_len: int = Field(gt=0, description="The context the model was pretrained with (8192).")


class RopePosition(Strict):
    """Rotary position embedding applied to queries and keys (Su et al. 2021; LLaMA layout)."""

    kind: Literal["rope"] = Field(description="Rotary position embedding.")
    theta: float = Field(10000.0, gt=1.0, description="Rotary base frequency.")
    scaling_factor: float = Field(
        1.0, ge=1.0, description="Linear position interpolation: positions are divided by this factor."
    )
    frequency_scaling: Llama3Frequencies | None = Field(
        None, description="A scaling of the rotary frequencies themselves: llama3 (Llama 3.1). Omitted: none."
    )


class AlibiPosition(Strict):
    """Attention with linear biases (Press et al. 2022): a per-head slope times the distance."""

    kind: Literal["alibi"] = Field(description="ALiBi linear distance bias.")


class NoPosition(Strict):
    """No position information (NoPE); a causal mask alone still orders tokens."""

    kind: Literal["none"] = Field(description="No positional scheme.")


PositionSpec = Annotated[
    SinusoidalPosition | LearnedPosition | RelativePosition | RopePosition | AlibiPosition | NoPosition,
    Field(discriminator="kind"),
]


# --- norms ------------------------------------------------------------------------------------

NormPlacement = Literal["pre", "post", "sandwich"]


class _Norm(Strict):
    """What every norm variant has: where the norms sit, their epsilon, and whether the stack ends with one."""

    kind: str  # each variant narrows it to its Literal (declared here so that it is dumped first)
    placement: NormPlacement = Field(
        "pre",
        description="pre: x + f(norm(x)) (GPT-2, LLaMA); post: norm(x + f(x)) (original transformer); sandwich: "
        "x + norm'(f(norm(x))), a second norm on each sublayer's output (Gemma 2).",
    )
    eps: float = Field(1e-5, gt=0.0, description="Epsilon added to the variance.")
    final: bool = Field(True, description="Apply a norm to the last block's output (usual with pre-norm).")
    embedding: bool = Field(
        False,
        description="Also normalise the embeddings (with their positions) before the first block, in each stack "
        "(BART's layernorm_embedding).",
    )


class LayerNormSpec(_Norm):
    """LayerNorm (Ba et al. 2016): centred, scaled by a gain, with a bias where the spec has biases."""

    kind: Literal["layernorm"] = Field("layernorm", description="LayerNorm.")


class RmsNormSpec(_Norm):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x^2) + eps) * (offset + g)``, no centring, no bias."""

    kind: Literal["rmsnorm"] = Field(description="RMSNorm.")
    offset: float = Field(
        0.0,
        description="Added to the learned gain g, which starts at 1 - offset: Gemma stores g - 1 and applies "
        "1 + g (offset 1).",
    )


NormSpec = Annotated[LayerNormSpec | RmsNormSpec, Field(discriminator="kind"), default_kind("layernorm")]


# --- init -------------------------------------------------------------------------------------


class NormalInit(Strict):
    """Normal(0, std) weights, zero biases; GPT-2 scales residual projections by 1/sqrt(2 * layers)."""

    kind: Literal["normal"] = Field("normal", description="Normal initialisation (GPT-2).")
    std: float = Field(0.02, gt=0.0, description="Standard deviation of weights and embeddings.")
    scaled_residual: bool = Field(
        True, description="Scale output projections of attention and FFN by 1/sqrt(2 * n_layers)."
    )


class XavierInit(Strict):
    """Xavier-uniform linear weights, Normal(0, d_model^-1/2) embeddings (original transformer)."""

    kind: Literal["xavier"] = Field(description="Xavier-uniform initialisation.")
    gain: float = Field(1.0, gt=0.0, description="Gain passed to xavier_uniform_.")


InitSpec = Annotated[NormalInit | XavierInit, Field(discriminator="kind")]


def variant_kinds(family: object) -> tuple[str, ...]:
    """The ``kind`` values of a family: a discriminated union of variants, or a ``Literal``.

    ``variant_kinds(PositionSpec)`` -> ('sinusoidal', 'learned', ...). Tests hold each builder
    table's keys equal to this, so a kind cannot be added to the spec and not to the builders.
    """
    args = getattr(family, "__args__", ())
    origin = getattr(family, "__origin__", None)
    if getattr(family, "__metadata__", None) is not None:  # Annotated[Union[...], Field(...)]
        return variant_kinds(origin)
    if args and all(isinstance(a, str) for a in args):  # Literal["a", "b"]
        return tuple(args)
    kinds: list[str] = []
    for variant in args:
        kinds.extend(variant_kinds(variant.model_fields["kind"].annotation))
    return tuple(kinds)


def variant_examples(family: object) -> list[dict[str, Any]]:
    """One example section per variant of ``family``: its ``kind`` and `Strict.example`.

    ``variant_examples(AttentionPattern)`` -> [{'kind': 'full'}, {'kind': 'local', 'window': 3}, ...].
    Tests that must cover every variant take their lists from here, so a new kind is covered (or
    fails them) without anyone editing a list by hand."""
    if getattr(family, "__metadata__", None) is not None:
        return variant_examples(family.__origin__)  # type: ignore[attr-defined]
    return [
        {"kind": kind, **variant.example}
        for variant in getattr(family, "__args__", ())
        for kind in variant_kinds(variant.model_fields["kind"].annotation)
    ]
