"""One row per ``config.json`` ``model_type``: how a Hugging Face config becomes a Nima spec and back, and
where each Nima weight sits in the checkpoint.

A row's ``spec`` reads the config keys it knows and refuses, naming the key, any value the spec
cannot express (a RoPE scaling kind, an activation, a bias layout Nima has no field for); its
``config`` writes the nearest config of that type for a spec, and a spec exports to the type
only where importing that config gives the spec back (`nima.interop.hf.exporter`). Its
``weights`` (`nima.interop.hf.layouts.Map`) serve both directions; entries for parameters the
spec does not have (biases of a bias-free model) are skipped, and a checkpoint tensor no entry
reads, and no ``ignored`` pattern names, is an import error, so no weight is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nima.interop.hf import bart, gpt2, llama, t5
from nima.interop.hf.config import HfConfig
from nima.interop.hf.layouts import Map
from nima.spec import ModelSpec


@dataclass(frozen=True)
class HfArchitecture:
    """How one ``model_type`` imports and exports; see the module docstring."""

    body_prefix: str  # what the body's tensor names start with in a checkpoint of the model with its head
    spec: Callable[[HfConfig], dict[str, Any]]  # the spec's fields besides name and generation defaults
    config: Callable[[ModelSpec, str], dict[str, Any]]  # (spec, model_type) -> the nearest config
    weights: tuple[Map, ...]
    ignored: tuple[str, ...] = ()  # regexes of checkpoint tensors that hold no weight (cached buffers)


ROTARY_BUFFERS = (r"rotary_emb\.inv_freq$",)

# In the order `nima export --hf` tries them: the first whose config gives the spec back is written.
ARCHITECTURES: dict[str, HfArchitecture] = {
    "gpt2": HfArchitecture("transformer.", gpt2.spec, gpt2.config, gpt2.WEIGHTS, (r"\.attn\.(masked_)?bias$",)),
    "llama": HfArchitecture("model.", llama.spec, llama.config, llama.WEIGHTS, ROTARY_BUFFERS),
    "mistral": HfArchitecture("model.", llama.spec, llama.config, llama.WEIGHTS, ROTARY_BUFFERS),
    "qwen2": HfArchitecture("model.", llama.qwen2_spec, llama.config, llama.WEIGHTS, ROTARY_BUFFERS),
    "qwen3": HfArchitecture("model.", llama.qwen3_spec, llama.config, llama.WEIGHTS, ROTARY_BUFFERS),
    "gemma": HfArchitecture("model.", llama.gemma_spec, llama.config, llama.WEIGHTS, ROTARY_BUFFERS),
    "gemma2": HfArchitecture("model.", llama.gemma2_spec, llama.config, llama.GEMMA2_WEIGHTS, ROTARY_BUFFERS),
    "phi3": HfArchitecture("model.", llama.phi3_spec, llama.config, llama.PHI3_WEIGHTS, ROTARY_BUFFERS),
    "t5": HfArchitecture("", t5.spec, t5.config, t5.WEIGHTS, t5.IGNORED),
    "bart": HfArchitecture("model.", bart.spec, bart.config, bart.WEIGHTS, bart.IGNORED),
    "marian": HfArchitecture("model.", bart.spec, bart.config, bart.WEIGHTS, bart.MARIAN_IGNORED),
}
