"""`Sizes`: the model's numbers, the one argument every variant factory shares.

Each variant family has a closed table ``kind -> factory`` in the module of its parts
(`nima.builders.ffn.FFNS`, `nima.builders.positions.POSITIONS`, ...), and every factory is
called the same way, ``factory(sizes, **fields)``: the model's numbers, then the variant's own
fields from the spec as keywords. So a factory reads plain numbers, never a spec, and the
builder (`nima.builders.build`) makes every part with one call (`make`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """The numbers of a model that its parts are built from."""

    d_model: int
    n_heads: int = 1
    n_kv_heads: int = 1
    head_dim: int = 1
    max_seq_len: int = 1
    n_layers: int = 1  # blocks in all stacks
    bias: bool = False  # biases in linear layers and LayerNorms
