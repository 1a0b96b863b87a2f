"""`nima import` of encoder-decoders (T5 v1.0 and v1.1, BART, Marian): the imported model computes what
transformers computes — in PyTorch, cached, and exported to ONNX — and generates its greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_support import SEQ2SEQ_CASES, VOCAB, import_cases, nima_model, save
from transformers import PreTrainedModel

from nima.export.bundle import export_bundle
from nima.export.parity import session_for
from nima.interop.hf.importer import import_hf
from nima.layout import (
    ATTENTION_MASK,
    CROSS_KEY,
    CROSS_VALUE,
    ENCODER_ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    layer_names,
)
from nima.runtime import Generator
from nima.spec import load_spec

TOL = 1e-4


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[PreTrainedModel, Path]]:
    """Each case's transformers model and the Nima model folder imported from its saved folder."""
    return import_cases(list(SEQ2SEQ_CASES), tmp_path_factory.mktemp("hf-import-seq2seq"), first_seed=100)


def sources(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources of 11 tokens, the second and third right-padded by 3 and 6 (as transformers'
    tokenizers pad an encoder's batch)."""
    ids = torch.randint(3, VOCAB - 1, (3, 11), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, -3:] = 0
    mask[2, -6:] = 0
    return ids, mask


@pytest.mark.parametrize("case", list(SEQ2SEQ_CASES))
def test_pytorch_logits_equal_transformers(imported: dict, case: str) -> None:
    """Teacher-forced logits on a padded source batch, and cached decoding equal to the full forward."""
    hf, folder = imported[case]
    spec, model = nima_model(folder)
    ids, mask = sources(1)
    start = spec.generation.decoder_start_token_id
    targets = torch.randint(3, VOCAB - 1, (3, 7), generator=torch.Generator().manual_seed(2))
    decoder_ids = torch.cat([torch.full((3, 1), start), targets], dim=1)  # (3, 8)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        got, _, _ = model(ids, decoder_ids, mask)
        assert (got - want).abs().max() <= TOL
        memory = model.encode(ids, mask)
        _, cache, cross = model.decode(decoder_ids[:, :3], memory, mask)
        for t in range(3, 8):
            step, cache, _ = model.decode(decoder_ids[:, t : t + 1], None, mask, None, None, cache, cross)
            assert (step[:, 0] - got[:, t]).abs().max() <= TOL


@pytest.mark.parametrize("case", list(SEQ2SEQ_CASES))
def test_bundle_greedy_tokens_equal_transformers(imported: dict, case: str, tmp_path: Path) -> None:
    """The exported graphs' teacher-forced logits equal transformers' within 1e-4 on a padded source batch, and
    the bundle gives `generate`'s greedy tokens for 64 new tokens, from sources of different lengths (BART's and
    Marian's last token forced to EOS, as their configs say)."""
    hf, folder = imported[case]
    spec = load_spec(folder / "nima.json")
    bundle = export_bundle(folder, tmp_path / "bundle").out
    ids, mask = sources(3)
    decoder_ids = torch.cat(
        [torch.full((3, 1), spec.generation.decoder_start_token_id), ids[:, :6].flip(1)], dim=1
    )  # (3, 7): any target will do
    encoded = session_for(bundle / "encoder.onnx").run(None, {INPUT_IDS: ids.numpy(), ATTENTION_MASK: mask.numpy()})
    empty = np.zeros((3, spec.n_kv_heads, 0, spec.head_dim), np.float32)
    feed = {
        INPUT_IDS: decoder_ids.numpy(),
        ATTENTION_MASK: np.ones(decoder_ids.shape, np.int64),
        POSITION_IDS: np.broadcast_to(np.arange(decoder_ids.shape[1]), decoder_ids.shape).copy(),
        ENCODER_ATTENTION_MASK: mask.numpy(),
        **{name % i: empty for i in range(spec.n_layers) for name in (PAST_KEY, PAST_VALUE)},
        **dict(zip(layer_names((CROSS_KEY, CROSS_VALUE), spec.n_layers), encoded[1:], strict=True)),
    }
    got = session_for(bundle / "decoder.onnx").run([LOGITS], feed)[0]
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits.numpy()
    assert np.abs(got - want).max() <= TOL
    rows = [ids[i][mask[i].bool()].tolist() for i in range(3)]
    generator = Generator(bundle)
    got = generator.generate(rows, max_new_tokens=64, min_new_tokens=64)
    for row, result in zip(rows, got, strict=True):
        with torch.no_grad():
            reference = hf.generate(torch.tensor([row]), do_sample=False, max_new_tokens=64, min_new_tokens=64)
        assert result.token_ids == reference[0, 1:].tolist()  # transformers' output begins with the start token


def test_the_spec_reads_like_a_spec(imported: dict) -> None:
    """T5's unscaled attention, relative buckets and scaled tied head; v1.1's GELU-tanh gate and unscaled
    head; BART's offset table, embedding norm, post-norm and logit bias; Marian's split sinusoids, scaled
    embeddings and SiLU."""
    specs = {case: load_spec(folder / "nima.json") for case, (_, folder) in imported.items()}
    t5, v11, bart, marian = specs["t5"], specs["t5-v1.1"], specs["bart"], specs["marian"]
    assert (t5.attention.scale, t5.position.num_buckets, t5.n_encoder_layers, t5.n_layers) == (1.0, 8, 2, 2)
    assert (t5.ffn.kind, t5.output_scale, t5.bias) == ("relu", 64**-0.5, False)
    assert (v11.ffn.kind, v11.ffn.approximate, v11.output_scale) == ("geglu", "tanh", 1.0)
    assert (bart.position.kind, bart.position.offset, bart.norm.placement, bart.norm.embedding) == (
        "learned",
        2,
        "post",
        True,
    )
    assert (bart.output_bias, bart.norm.final, bart.generation.decoder_start_token_id) == (True, False, 2)
    assert (bart.n_encoder_layers, bart.n_layers) == (2, 3)
    assert (bart.generation.forced_bos_token_id, bart.generation.forced_eos_token_ids) == (None, [2])
    assert (marian.generation.forced_bos_token_id, marian.generation.forced_eos_token_ids) == (None, [0])
    assert (marian.position.layout, marian.scale_embeddings, marian.ffn.kind, marian.norm.embedding) == (
        "split",
        True,
        "silu",
        False,
    )
    assert (marian.generation.decoder_start_token_id, marian.generation.pad_token_id) == (VOCAB - 1, VOCAB - 1)
    assert (t5.generation.decoder_start_token_id, t5.generation.eos_token_ids) == (0, [1])


def test_a_forced_first_token(imported: dict, tmp_path: Path) -> None:
    """``forced_bos_token_id`` in generation_config.json (bart-large-cnn's 0) forces the first token, in greedy
    decoding and beam search, as transformers' ``generate`` does with it."""
    hf, folder = imported["bart"]
    source = save(hf, tmp_path / "hf")
    config = json.loads((source / "generation_config.json").read_text())
    (source / "generation_config.json").write_text(json.dumps({**config, "forced_bos_token_id": 5}))
    import_hf(source, tmp_path / "nima")
    assert load_spec(tmp_path / "nima" / "nima.json").generation.forced_bos_token_id == 5
    generator = Generator(export_bundle(tmp_path / "nima", tmp_path / "bundle").out)
    row = sources(4)[0][0, :7].tolist()
    for options in ({}, {"num_beams": 3}):
        with torch.no_grad():
            want = hf.generate(
                torch.tensor([row]), do_sample=False, max_new_tokens=12, forced_bos_token_id=5, **options
            )
        got = generator.generate([row], max_new_tokens=12, **options)[0].token_ids
        assert got[0] == 5 and got == want[0, 1:].tolist()
