"""Weight initialisation schemes, applied to a built model.

``normal``: GPT-2 — Normal(0, std) for linear layers and embeddings, zero biases, and the
residual output projections (marked ``nima_residual`` by the modules that own them) scaled by
1/sqrt(2 * layers) so the residual stream's variance does not grow with depth.
``xavier``: the original transformer — Xavier-uniform linear layers, Normal(0, d^-1/2)
embeddings. Norms keep their unit gains and zero biases in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from torch import nn


def normal_init(model: nn.Module, std: float, scaled_residual: bool, n_layers: int) -> None:
    residual_std = std / math.sqrt(2 * n_layers) if scaled_residual else std
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, residual_std if getattr(module, "nima_residual", False) else std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)


def xavier_init(model: nn.Module, gain: float, d_model: int) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    # Embeddings last, so an output head tied to the token embedding keeps the embedding init.
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, d_model**-0.5)


# The closed table of init kinds: kind -> factory(sizes, **init fields) (`nima.builders.sizes`), which
# gives the function that initialises a built model.
INITS: dict[str, Callable[..., Callable[[nn.Module], None]]] = {
    "normal": lambda sizes, std, scaled_residual: partial(
        normal_init, std=std, scaled_residual=scaled_residual, n_layers=sizes.n_layers
    ),
    "xavier": lambda sizes, gain: partial(xavier_init, gain=gain, d_model=sizes.d_model),
}
