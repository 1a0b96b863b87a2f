"""Encoder-decoder generation from the two-graph bundle: greedy and beam search equal PyTorch
references that recompute the whole target every step (no cache), for the original transformer,
a T5-style model and a RoPE + GQA model; batches of padded sources equal one by one."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from runtime_support import take_rows_on_device
from test_beam import reference_beam_search

from nima.builders import build_model, save_build
from nima.builders.models import EncoderDecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import GenerateError, Generator
from nima.spec import spec_from_dict

BASE: dict[str, Any] = {
    "architecture": "encoder-decoder",
    "vocab_size": 40,
    "max_seq_len": 48,
    "d_model": 32,
    "n_layers": 2,
    "n_encoder_layers": 2,
    "attention": {"n_heads": 4},
    "init": {"kind": "normal", "std": 0.3},
}
FAMILIES: dict[str, dict[str, Any]] = {
    "original": {
        "ffn": {"kind": "relu", "hidden": 64},
        "position": {"kind": "sinusoidal"},
        "norm": {"kind": "layernorm", "placement": "post"},
    },
    "t5": {
        "ffn": {"kind": "geglu", "hidden": 48},
        "position": {"kind": "relative"},
        "norm": {"kind": "rmsnorm", "placement": "pre"},
        "bias": False,
    },
    "rope-gqa": {
        "attention": {"n_heads": 4, "n_kv_heads": 2},
        "ffn": {"kind": "swiglu", "hidden": 48},
        "position": {"kind": "rope"},
        "norm": {"kind": "rmsnorm"},
    },
}
START, EOS = 0, 2  # a `nima build` folder has no run record or tokenizer: the bundle's start id falls back to 0
SOURCES = [[5, 9, 12, 30, 7, 7, 21], [33, 4], [8, 8, 19, 3]]


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, EncoderDecoderLM]]:
    root = tmp_path_factory.mktemp("seq2seq-runtime")
    found = {}
    for i, (family, changes) in enumerate(FAMILIES.items()):
        spec = spec_from_dict({**BASE, "name": f"s2s-{family}", **changes})
        model = build_model(spec, seed=i)
        source = save_build(model, spec, root / f"{family}-src")
        bundle = export_bundle(source, root / f"{family}-bundle", verify=False).out
        assert json.loads((bundle / "bundle.json").read_text())["decoder_start_token_id"] == START
        found[family] = (bundle, model.eval())
    return found


def full_logprobs(model: EncoderDecoderLM, source: list[int], target: list[int]) -> np.ndarray:
    """log p(. | source, target) by encoding the source and decoding the whole target, no cache."""
    with torch.no_grad():
        hidden = model.encode(torch.tensor([source]))
        logits, _, _ = model.decode(torch.tensor([target]), hidden)
    return torch.log_softmax(logits[0, -1].double(), dim=-1).numpy()


def torch_greedy(model: EncoderDecoderLM, source: list[int], steps: int) -> list[int]:
    target = [START]
    for _ in range(steps):
        target.append(int(full_logprobs(model, source, target).argmax()))
        if target[-1] == EOS:
            break
    return target[1:]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_equals_pytorch(family: str, seq2seq: dict[str, tuple[Path, EncoderDecoderLM]]) -> None:
    path, model = seq2seq[family]
    gen = Generator(path)
    assert gen.is_seq2seq
    options = {"max_new_tokens": 40, "do_sample": False, "eos_token_ids": [EOS]}
    batch = gen.generate(sources=SOURCES, **options)
    for source, result in zip(SOURCES, batch, strict=True):
        expected = torch_greedy(model, source, 40)
        assert result.token_ids == expected
        assert result.prompt_ids == source
        assert gen.generate(sources=[source], **options)[0].token_ids == expected
    assert len({tuple(r.token_ids) for r in batch}) == len(SOURCES), "different sources should differ"


@pytest.mark.parametrize(("family", "on_device"), [("original", False), ("t5", False), ("t5", True)])
def test_beam_equals_reference(family: str, on_device: bool, seq2seq: dict[str, tuple[Path, EncoderDecoderLM]]) -> None:
    """``on_device``: rows are gathered as on a GPU (`DeviceRows`), the source mask (int64) and the
    cross-attention keys/values with the cache."""
    path, model = seq2seq[family]
    eos = set(range(2, 8))
    gen = Generator(path)
    rows = take_rows_on_device(gen) if on_device else None
    results = gen.generate(
        sources=SOURCES[:2], num_beams=3, num_return_sequences=3, max_new_tokens=12, eos_token_ids=sorted(eos)
    )
    if rows is not None:  # per selection: self-attention cache, cross keys/values and the mask
        assert rows.calls >= 2 * (4 * gen.spec.n_layers + 1)
    for source, result in zip(SOURCES[:2], results, strict=True):
        expected = reference_beam_search(partial(full_logprobs, model, source), [START], 3, 12, eos, 1.0, False)
        assert [c.token_ids for c in result.completions] == [tokens for tokens, _ in expected]
        for completion, (_, score) in zip(result.completions, expected, strict=True):
            assert completion.score == pytest.approx(score, abs=1e-4)


def test_sampling_and_streaming_run(seq2seq: dict[str, tuple[Path, EncoderDecoderLM]]) -> None:
    path, _ = seq2seq["rope-gqa"]
    gen = Generator(path)
    runs = [gen.generate(sources=SOURCES, do_sample=True, top_k=8, seed=s, max_new_tokens=10) for s in (1, 1)]
    assert [r.token_ids for r in runs[0]] == [r.token_ids for r in runs[1]]
    options = {"do_sample": False, "max_new_tokens": 10, "eos_token_ids": [EOS]}
    streamed = list(gen.stream_tokens(SOURCES[0], **options))
    assert streamed == gen.generate(sources=[SOURCES[0]], **options)[0].token_ids


def test_special_ids_outside_the_vocabulary(seq2seq: dict[str, tuple[Path, EncoderDecoderLM]], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(seq2seq["original"][0], bundle)
    config = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**config, "decoder_start_token_id": 99999}))
    with pytest.raises(GenerateError, match="decoder_start_token_id 99999 is outside the vocabulary"):
        Generator(bundle)


def test_bad_sources(seq2seq: dict[str, tuple[Path, EncoderDecoderLM]]) -> None:
    gen = Generator(seq2seq["original"][0])
    with pytest.raises(GenerateError, match="encoder's context"):
        gen.generate(sources=[[3] * 49])
    with pytest.raises(GenerateError, match="source 0 is empty"):
        gen.generate(sources=[[]])


def test_cli_sources(seq2seq: dict[str, tuple[Path, EncoderDecoderLM]], text_bundle: tuple[Path, Any]) -> None:
    from typer.testing import CliRunner

    from nima.cli import app

    path, model = seq2seq["t5"]
    args = ["generate", str(path), "--prompt-ids", "5,9,12", "--greedy", "--eos-id", str(EOS), "--max-new-tokens", "9"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ",".join(map(str, torch_greedy(model, [5, 9, 12], 9)))
    wrong = CliRunner().invoke(app, ["generate", str(text_bundle[0]), "--source", "To be"])
    assert wrong.exit_code == 2 and "--source is for encoder-decoder bundles" in wrong.stderr
