"""Spec sections that are not variant families: attention, dropout, training and generation.

`GenerationSpec` lives in `nima.spec.generation` (a dataclass the runtime reads without Pydantic).

The ``training`` and ``generation`` sections are part of the schema now so that a spec file is
stable; the training loop and the runtime read them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from nima.spec.base import Strict
from nima.spec.variants import FullPattern, LocalPattern, PatternOrCycle, SparsePattern


class AttentionSpec(Strict):
    """Multi-head attention: heads, grouped-query sharing, pattern, kernel backend."""

    n_heads: int = Field(gt=0, le=4096, description="Number of query heads; must divide d_model.")
    n_kv_heads: int | None = Field(
        None,
        gt=0,
        le=4096,
        description="Key/value heads: equal to n_heads for multi-head, fewer for grouped-query, 1 for "
        "multi-query; must divide n_heads. Omitted: n_heads.",
    )
    head_dim: int | None = Field(
        None,
        gt=0,
        le=2**16,
        description="Width of each head; omitted: d_model / n_heads (T5 and Gemma set it explicitly).",
    )
    pattern: PatternOrCycle = Field(
        default_factory=FullPattern,
        description="Which keys each query sees: full | local | sparse; a list is cycled over the layers, layer i "
        "taking entry i mod its length ([local, full]: Gemma 2's alternating sliding-window and global layers).",
    )
    backend: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="sdpa: torch scaled_dot_product_attention (flash kernels on GPU where the mask "
        "allows); eager: explicit softmax(QK^T)V.",
    )
    qk_norm: bool = Field(False, description="Normalise queries and keys per head before the dot product.")
    softcap: float | None = Field(
        None,
        gt=0.0,
        description="Soft-cap the attention scores before the mask: cap * tanh(scores / cap) (Gemma 2: 50); "
        "omitted: none.",
    )
    scale: float | None = Field(
        None,
        gt=0.0,
        description="What q.k is multiplied by before the softmax; omitted: 1/sqrt(head_dim). T5 uses 1 (its "
        "scale is folded into its weights' initialisation).",
    )
    qkv_bias: bool | None = Field(
        None,
        description="Biases on the query, key and value projections; omitted: the spec's bias. Qwen2 has them "
        "and no other bias.",
    )

    @property
    def patterns(self) -> tuple[FullPattern | LocalPattern | SparsePattern, ...]:
        """The pattern cycle: layer i takes entry i mod its length."""
        return tuple(self.pattern) if isinstance(self.pattern, list) else (self.pattern,)

    @model_validator(mode="after")
    def _resolve_kv_heads(self) -> AttentionSpec:
        # The resolved spec always states n_kv_heads, so nima.json never needs a default to read.
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        return self


class DropoutSpec(Strict):
    """Dropout probabilities; a bare number in the spec sets all three."""

    embedding: float = Field(0.0, ge=0.0, lt=1.0, description="After the token (+position) embedding.")
    attention: float = Field(0.0, ge=0.0, lt=1.0, description="On the attention probabilities.")
    residual: float = Field(0.0, ge=0.0, lt=1.0, description="On each sublayer output before the residual add.")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"embedding": value, "attention": value, "residual": value}
        return value


class OptimizerSpec(Strict):
    """AdamW; weight decay never applies to norms, biases and embeddings."""

    kind: Literal["adamw"] = Field("adamw", description="Optimizer.")
    lr: float = Field(3e-4, gt=0.0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam beta1, beta2.")
    eps: float = Field(1e-8, gt=0.0, description="Adam epsilon.")
    weight_decay: float = Field(0.1, ge=0.0, description="Decoupled weight decay on matrices.")


class ScheduleSpec(Strict):
    """Learning-rate schedule: linear warmup, then decay to min_lr_ratio * lr."""

    kind: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay shape after warmup.")
    warmup_steps: int = Field(100, ge=0, description="Steps of linear warmup from 0.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final learning rate as a fraction of lr.")


class TrainingSpec(Strict):
    """How `nima train` trains this model."""

    seq_len: int | None = Field(None, gt=0, description="Training context length; omitted: max_seq_len.")
    batch_size: int = Field(8, gt=0, le=2**20, description="Sequences per micro-batch (per process).")
    grad_accum: int = Field(1, gt=0, le=2**20, description="Micro-batches accumulated per optimizer step.")
    max_steps: int = Field(1000, gt=0, description="Optimizer steps.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer settings.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="Learning-rate schedule.")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the global gradient norm to this; 0 disables.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on GPUs that support it, fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute block activations in backward.")
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    log_every: int = Field(10, gt=0, description="Log the training loss, lr and tokens/s every N steps.")
    eval_every: int = Field(200, gt=0, description="Evaluate every N steps (and after the last one).")
    eval_batches: int = Field(
        20,
        gt=0,
        description="Validation batches per evaluation, each the size of a global training batch "
        "(batch_size x grad_accum x processes).",
    )
    checkpoint_every: int = Field(500, gt=0, description="Write a checkpoint every N steps.")
    keep_last: int = Field(3, gt=0, description="Checkpoints kept on disk.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of the data held out for validation.")
    tokenizer: Literal["bpe", "byte", "char", "word"] = Field(
        "bpe",
        description="bpe: byte-level BPE trained at vocab_size; byte: 256 ids; char: one id per character; "
        "word: the vocab_size most frequent whitespace-separated words (others <unk>; spacing becomes one space).",
    )
    distributed: Literal["ddp", "fsdp"] = Field("ddp", description="Strategy under torchrun.")
    seed: int = Field(1337, description="Seed for data order and dropout.")
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="torch intra-op threads when training on the CPU; omitted: torch's default (one per core, "
        "the fastest on an idle machine; nima train hints at fewer when other work keeps cores busy).",
    )
