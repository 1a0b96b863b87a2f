"""bench/prefill.py: both prefills run on a small bundle, and a graph without the input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_support import load_bench, small_bundle

import nima.export.decoder.graph as decoder_graph

prefill = load_bench("prefill")


@pytest.mark.parametrize("target", ["ort", "portable"])
def test_both_prefills_are_timed(target: str, tmp_path: Path) -> None:
    bundle, spec = small_bundle(tmp_path, target)
    every, last = prefill.time_prefill(bundle, spec, batch=2, length=9, rounds=3)
    assert every > 0 and last > 0


def test_a_graph_without_the_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_graph, "add_logits_to_keep", lambda model: True)  # as exported before the input
    bundle, spec = small_bundle(tmp_path, "portable")
    with pytest.raises(SystemExit, match="no logits_to_keep input"):
        prefill.time_prefill(bundle, spec, batch=1, length=4, rounds=1)
