"""The runtime asks graphs with the optional ``logits_to_keep`` input for the last position only,
and still runs bundles exported before the input existed. Tokens are held to the PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from runtime_support import make_spec, torch_greedy

import nima.export.decoder.graph as decoder_graph
from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import Generator
from nima.runtime.session import KVCache

PROMPTS = [[5, 9, 2, 33, 17, 8, 40], [11, 4, 4], [3, 60, 22, 22]]


class RecordingRuns:
    """Stands in for the session's C++ binding: runs it and notes each run's logits shape."""

    def __init__(self, binding: Any) -> None:
        self.binding = binding
        self.logits_shapes: list[tuple[int, ...]] = []

    def run_with_ort_values(self, feed: dict, names: list[str], options: Any) -> Any:  # noqa: ANN401 - ORT's
        result = self.binding.run_with_ort_values(feed, names, options)
        self.logits_shapes.append(tuple(result[0].shape()))
        return result


def test_the_prefill_makes_the_last_positions_logits_only(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = bundles["llama"]
    gen = Generator(path)
    assert gen.session.keeps_last
    runs = RecordingRuns(gen.session._binding)
    gen.session._binding = runs
    assert gen.generate([PROMPTS[0]], max_new_tokens=12, do_sample=False)[0].token_ids == torch_greedy(
        model, PROMPTS[0], 12
    )
    assert runs.logits_shapes[0] == (1, 1, 64), "a 7-token prefill makes one position's logits"
    runs.logits_shapes.clear()
    outs = gen.generate(PROMPTS, max_new_tokens=12, do_sample=False)  # a left-padded batch
    assert [out.token_ids for out in outs] == [torch_greedy(model, prompt, 12) for prompt in PROMPTS]
    assert runs.logits_shapes[0] == (3, 1, 64)


def test_a_bundle_without_the_input_still_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundles exported before ``logits_to_keep`` (every position's logits) decode as before."""
    monkeypatch.setattr(decoder_graph, "add_logits_to_keep", lambda model: True)  # as exported before the input
    spec = make_spec("gpt2", name="rt-old")
    model = build_model(spec, seed=3).eval()
    source = save_build(model, spec, tmp_path / "src")
    export_bundle(source, tmp_path / "bundle", verify=False)
    gen = Generator(tmp_path / "bundle")
    assert not gen.session.keeps_last
    outs = gen.generate(PROMPTS, max_new_tokens=12, do_sample=False)
    assert [out.token_ids for out in outs] == [torch_greedy(model, prompt, 12) for prompt in PROMPTS]


def test_the_io_binding_path_feeds_it_too(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """The IO-binding step (the CUDA provider's path) run on the CPU: the prefill's logits are the last
    position's only, equal to the plain step's."""
    path, _ = bundles["gpt2"]
    session = Generator(path).session
    ids = np.array([PROMPTS[0]], dtype=np.int64)  # (1, 7)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    empty = session.empty_cache(1)
    as_python = KVCache(tuple(ort.OrtValue(value) for value in empty.values), 0, 1)  # CUDA caches are these
    bound = session._run_bound(ids, mask, positions, as_python)[0].numpy()
    assert bound.shape == (1, 1, 64)
    plain, _ = session.step(ids, mask, positions, empty)  # (1, V)
    np.testing.assert_allclose(bound[:, 0], plain, rtol=0, atol=1e-6)
