"""Beam search on an imported model equals transformers' ``generate(num_beams=...)``: the same sequences and
scores, on decoders and an encoder-decoder, for each ``early_stopping`` (True, False, "never") and length
penalty, with beams ending on EOS,
and with the processors (repetition penalty, no-repeat n-grams, minimum length) where transformers applies
them in beam search (after the log-softmax)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hf_support import random_model, save
from transformers import PreTrainedModel

from nima.export.bundle import export_bundle
from nima.interop.hf.importer import import_hf
from nima.runtime import Generator

EOS = [2, 11, 17, 23, 31, 40, 52, 66]  # an eighth of the vocabulary ends a sequence: beams finish along the way
PROMPTS = [[5, 9, 14, 3, 27], [60, 8]]
NEW = 20


# case -> the seed of its random weights: on bart's, some beams end on EOS and others run to the length limit
SEEDS = {"llama": 11, "gpt2": 11, "bart": 12}


@pytest.fixture(scope="module", params=list(SEEDS))
def models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[PreTrainedModel, Path]:
    root = tmp_path_factory.mktemp(f"beam-{request.param}")
    hf = random_model(request.param, SEEDS[request.param])
    import_hf(save(hf, root / "hf"), root / "nima")
    return hf, export_bundle(root / "nima", root / "bundle").out


def until_eos(tokens: list[int]) -> list[int]:
    """The generated tokens up to and including the first end token (transformers pads after it)."""
    for i, token in enumerate(tokens):
        if token in EOS:
            return tokens[: i + 1]
    return tokens


@pytest.mark.parametrize(
    "options",
    [
        {"early_stopping": True, "length_penalty": 1.0},
        {"early_stopping": False, "length_penalty": 1.0},
        {"early_stopping": "never", "length_penalty": 1.0},
        {"early_stopping": False, "length_penalty": 0.6},
        {"early_stopping": "never", "length_penalty": 0.6},
        {"early_stopping": False, "length_penalty": 1.0, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
        {"early_stopping": True, "length_penalty": 1.0, "min_new_tokens": 6},
    ],
    ids=["true", "false", "never", "false-lp0.6", "never-lp0.6", "processors", "min-new-tokens"],
)
def test_beam_search_equals_transformers(models: tuple[PreTrainedModel, Path], options: dict[str, Any]) -> None:
    hf, bundle = models
    gen = Generator(bundle)
    ended_on_eos = 0
    for prompt in PROMPTS:
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([prompt]),
                do_sample=False,
                num_beams=4,
                num_return_sequences=2,
                max_new_tokens=NEW,
                eos_token_id=EOS,
                pad_token_id=EOS[0],
                output_scores=True,
                return_dict_in_generate=True,
                **options,
            )
        start = 1 if hf.config.is_encoder_decoder else len(prompt)  # after the decoder's start token, or the prompt
        want = [until_eos(seq[start:].tolist()) for seq in out.sequences]
        result = gen.generate(
            [prompt], num_beams=4, num_return_sequences=2, max_new_tokens=NEW, eos_token_ids=EOS, **options
        )
        got = result[0].completions
        assert [c.token_ids for c in got] == want
        for completion, score in zip(got, out.sequences_scores.tolist(), strict=True):
            assert completion.score == pytest.approx(score, abs=1e-4)
        ended_on_eos += sum(c.finish_reason == "eos" for c in got)
    assert ended_on_eos, "some beams should end on EOS, or the finishing rules go untested"
