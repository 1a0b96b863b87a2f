"""`slide_context`: past max_seq_len, each token from the last max_seq_len tokens read anew, as
nanoGPT's sampler does; compared with that loop written plainly in PyTorch (crop, full forward)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_support import FAMILIES

from nima.builders.models import DecoderLM
from nima.runtime import GenerateError, Generator


def cropped_greedy(model: DecoderLM, prompt: list[int], steps: int, context: int) -> list[int]:
    """nanoGPT's sampler, greedy: crop to the last ``context`` tokens, full forward, take the last logits."""
    history = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(torch.tensor([history[-context:]]))
            history.append(int(logits[0, -1].argmax()))
    return history[len(prompt) :]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_past_the_context_equals_the_cropping_loop(
    bundles: dict[str, tuple[Path, DecoderLM]], family: str
) -> None:
    path, model = bundles[family]
    generator = Generator(path)
    context = generator.spec.max_seq_len
    prompt = list(np.arange(context - 6) % 50 + 3)  # the context fills after 6 tokens; 14 more slide
    got = generator.generate([prompt], max_new_tokens=20, do_sample=False, slide_context=True)[0].completions[0]
    assert got.token_ids == cropped_greedy(model.eval(), prompt, 20, context)
    assert got.finish_reason == "length"
    streamed = list(generator.stream_tokens(prompt, max_new_tokens=20, do_sample=False, slide_context=True))
    assert streamed == got.token_ids
    stopped = generator.generate([prompt], max_new_tokens=20, do_sample=False)[0].completions[0]
    assert (stopped.token_ids, stopped.finish_reason) == (got.token_ids[:6], "context")


def test_seeded_sampling_past_the_context_is_reproducible(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["gpt2"]
    generator = Generator(path)
    prompt = list(np.arange(generator.spec.max_seq_len - 2) % 50)
    options = {"max_new_tokens": 12, "do_sample": True, "seed": 5, "slide_context": True}
    batch = generator.generate([prompt], **options)[0].completions[0].token_ids
    assert list(generator.stream_tokens(prompt, **options)) == batch
    assert len(batch) == 12


def test_sliding_is_refused_where_it_does_not_apply(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    generator = Generator(bundles["llama"][0])
    with pytest.raises(GenerateError, match="option slide_context: not for beam search"):
        generator.generate([[1, 2, 3]], num_beams=2, slide_context=True)
