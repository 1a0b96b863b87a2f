"""Small random transformers checkpoints for tests that need a Hugging Face folder (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_llama(folder: Path, vocab_size: int, seed: int = 0) -> Path:
    """A random Llama folder as ``save_pretrained`` writes it (config.json, safetensors): 2 layers of width
    32, 4 query heads over 2 key/value heads, a context of 64."""
    transformers = pytest.importorskip("transformers")
    import torch

    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder
