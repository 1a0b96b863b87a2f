"""Size presets a spec can `extends:`; all three are GPT-2-style decoders.

| preset | d_model | layers | heads | ffn  | params |
|--------|---------|--------|-------|------|--------|
| tiny   | 256     | 4      | 4     | 1024 | ~10M   |
| small  | 768     | 12     | 12    | 3072 | ~125M  |
| medium | 1024    | 24     | 16    | 4096 | ~350M  |

tiny uses a 24,576-token vocabulary (a small BPE); small and medium use GPT-2's 50,257.
"""

from __future__ import annotations

from typing import Any


def _gpt2_style(name: str, vocab: int, d_model: int, layers: int, heads: int, hidden: int) -> dict[str, Any]:
    return {
        "name": name,
        "architecture": "decoder",
        "vocab_size": vocab,
        "max_seq_len": 1024,
        "d_model": d_model,
        "n_layers": layers,
        "attention": {"n_heads": heads},
        "ffn": {"kind": "gelu", "hidden": hidden},
        "position": {"kind": "learned"},
        "norm": {"kind": "layernorm", "placement": "pre", "eps": 1e-5},
        "bias": True,
        "tie_embeddings": True,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _gpt2_style("tiny", 24576, 256, 4, 4, 1024),
    "small": _gpt2_style("small", 50257, 768, 12, 12, 3072),
    "medium": _gpt2_style("medium", 50257, 1024, 24, 16, 4096),
}
