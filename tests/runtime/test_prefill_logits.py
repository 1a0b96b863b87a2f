"""The runtime asks graphs with the optional ``logits_to_keep`` input for the last position only,
and still runs bundles exported before the input existed. Tokens are held to the PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runtime_support import make_spec, torch_greedy

import nima.export.onnx_graph as onnx_graph
from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.command import export_bundle
from nima.runtime import Generator

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
    monkeypatch.setattr(onnx_graph, "add_logits_to_keep", lambda model: True)  # as exported before the input
    spec = make_spec("gpt2", name="rt-old")
    model = build_model(spec, seed=3).eval()
    source = save_build(model, spec, tmp_path / "src")
    export_bundle(source, tmp_path / "bundle", verify=False)
    gen = Generator(tmp_path / "bundle")
    assert not gen.session.keeps_last
    outs = gen.generate(PROMPTS, max_new_tokens=12, do_sample=False)
    assert [out.token_ids for out in outs] == [torch_greedy(model, prompt, 12) for prompt in PROMPTS]
