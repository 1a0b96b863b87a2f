"""Session-wide exported bundles for the runtime tests (each export takes seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_support import FAMILIES, make_bundle, make_spec, shakespeare_tokenizer

from nima.builders.models import DecoderLM
from nima.runtime import Generator


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, DecoderLM]]:
    """One bundle per family (GPT-2, LLaMA, ALiBi style), vocabulary 64, no tokenizer."""
    root = tmp_path_factory.mktemp("runtime-bundles")
    return {family: make_bundle(make_spec(family), root, seed=i) for i, family in enumerate(FAMILIES)}


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DecoderLM]:
    """A LLaMA-style bundle with a byte-level BPE tokenizer.json."""
    tokenizer = shakespeare_tokenizer(320)
    spec = make_spec("llama", name="rt-text", vocab_size=tokenizer.get_vocab_size())
    return make_bundle(spec, tmp_path_factory.mktemp("runtime-text"), tokenizer=tokenizer, seed=7)


@pytest.fixture(scope="session")
def ort_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaMA-style ``ort`` bundle with GroupQueryAttention (head dim 16) and its shared cache buffer."""
    from nima.export.bundle import export_bundle

    spec = make_spec("llama", name="rt-ort", d_model=64)
    source, _ = make_bundle(spec, tmp_path_factory.mktemp("runtime-ort"), seed=3)
    bundle = export_bundle(source.parent / f"{spec.name}-src", source.parent / "ort", target="ort", verify=False).out
    assert Generator(bundle).bundle.share_buffer
    return bundle
