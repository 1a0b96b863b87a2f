"""Session-wide bundles for the server tests (each export takes seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_support import KINDS, decoder_bundle, seq2seq_bundle, shakespeare_tokenizer


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One token-id bundle per cache kind (`serve_support.KINDS`) and an encoder-decoder ("t5")."""
    root = tmp_path_factory.mktemp("serve-bundles")
    found = {kind: decoder_bundle(kind, root, seed=i) for i, kind in enumerate(KINDS)}
    found["t5"] = seq2seq_bundle(root)
    return found


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaMA-style ``ort`` bundle with a byte-level BPE tokenizer.json (end token <|endoftext|>), a context
    of 512: long enough that a 500-token stream outlives its client's disconnect."""
    return decoder_bundle(
        "llama-ort",
        tmp_path_factory.mktemp("serve-text"),
        seed=3,
        tokenizer=shakespeare_tokenizer(320),
        max_seq_len=512,
    )
