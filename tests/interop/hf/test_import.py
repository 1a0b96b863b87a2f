"""`nima import`: a Hugging Face folder of each supported architecture becomes a Nima model that computes
what transformers computes — in PyTorch, cached, and exported to ONNX — and generates its greedy tokens."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_support import CASES, VOCAB, import_cases, nima_model, positions, random_model, save
from safetensors import safe_open
from tokenizers import Tokenizer, models
from transformers import PreTrainedModel

from nima.export.bundle import export_bundle
from nima.export.parity import session_for
from nima.interop.hf.importer import import_hf
from nima.layout import ATTENTION_MASK, INPUT_IDS, PAST_KEY, PAST_VALUE, POSITION_IDS
from nima.runtime import Generator
from nima.spec import load_spec

TOL = 1e-4


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[PreTrainedModel, Path]]:
    """Each case's transformers model and the Nima model folder imported from its saved folder."""
    return import_cases(list(CASES), tmp_path_factory.mktemp("hf-import"), first_seed=0)


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of 12 tokens, the second and third left-padded by 3 and 7."""
    ids = torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :7] = 0
    return ids, mask


@pytest.mark.parametrize("case", list(CASES))
def test_pytorch_logits_equal_transformers(imported: dict, case: str) -> None:
    """On a batch and a left-padded batch (real positions), and cached decoding equal to the full forward."""
    hf, folder = imported[case]
    _, model = nima_model(folder)
    ids, mask = batch(1)
    with torch.no_grad():
        want = hf(ids).logits
        got, _ = model(ids)
        assert (got - want).abs().max() <= TOL
        want = hf(ids, attention_mask=mask, position_ids=positions(mask)).logits
        got, _ = model(ids, mask)
        real = mask.bool()
        assert (got - want)[real].abs().max() <= TOL
        # the prompt's first 8 tokens as a prefill, then one cached token at a time
        _, cache = model(ids[:, :8], mask[:, :8])
        for t in range(8, 12):
            step, cache = model(ids[:, t : t + 1], mask[:, : t + 1], None, cache)
            assert (step[:, 0] - got[:, t]).abs().max() <= TOL


@pytest.mark.parametrize("target", ["portable", "ort"])
@pytest.mark.parametrize("case", list(CASES))
def test_bundle_logits_and_greedy_tokens_equal_transformers(
    imported: dict, case: str, target: str, tmp_path: Path
) -> None:
    """The exported graph's prefill logits against transformers', and `Generator`'s greedy tokens against
    ``generate(do_sample=False)`` for 64 new tokens."""
    hf, folder = imported[case]
    spec = load_spec(folder / "nima.json")
    bundle = export_bundle(folder, tmp_path / "bundle", target=target).out
    ids, mask = batch(2)
    session = session_for(bundle / "model.onnx")
    kv_dtype = np.float32
    empty = np.zeros((3, spec.n_kv_heads, 0, spec.head_dim), kv_dtype)
    feed = {INPUT_IDS: ids.numpy(), ATTENTION_MASK: mask.numpy(), POSITION_IDS: positions(mask).numpy()}
    feed |= {name % i: empty for i in range(spec.n_layers) for name in (PAST_KEY, PAST_VALUE)}
    got = session.run(["logits"], feed)[0]
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=positions(mask)).logits.numpy()
    real = mask.numpy().astype(bool)
    assert np.abs(got - want)[real].max() <= TOL

    prompt = ids[0, :5]
    with torch.no_grad():
        reference = hf.generate(prompt[None], do_sample=False, max_new_tokens=64, min_new_tokens=64)[0, 5:]
    tokens = Generator(bundle).generate([prompt.tolist()], max_new_tokens=64, min_new_tokens=64)[0].token_ids
    assert tokens == reference.tolist()


def test_sharded_and_bf16_checkpoints(tmp_path: Path) -> None:
    """A checkpoint in shards (an index and several files) and one stored in bf16 import to the same weights
    as the model they were saved from."""
    hf = random_model("llama", 7)
    sharded = save(hf, tmp_path / "sharded", max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    import_hf(sharded, tmp_path / "a")
    import_hf(save(copy.deepcopy(hf).to(torch.bfloat16), tmp_path / "bf16"), tmp_path / "b")
    _, from_shards = nima_model(tmp_path / "a")
    _, from_bf16 = nima_model(tmp_path / "b")
    ids, _ = batch(3)
    with torch.no_grad():
        assert (from_shards(ids)[0] - hf(ids).logits).abs().max() <= TOL
        for param in hf.parameters():  # the fp32 model with the bf16 file's weights (its RoPE buffer stays fp32)
            param.copy_(param.to(torch.bfloat16).float())
        assert (from_bf16(ids)[0] - hf(ids).logits).abs().max() <= TOL


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_dtype_and_a_second_import_is_bitwise_the_same(imported: dict, dtype: str, tmp_path: Path) -> None:
    """``--dtype`` stores the weights in that type; importing the same folder twice writes the same bytes."""
    hf, _ = imported["llama"]
    source = save(hf, tmp_path / "hf")
    for out in ("one", "two"):
        import_hf(source, tmp_path / out, dtype=dtype)
    one, two = (tmp_path / out / "model.safetensors" for out in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
    with safe_open(str(one), framework="pt") as f:
        stored = {f.get_tensor(name).dtype for name in f.keys()}  # noqa: SIM118 - safe_open is no dict
    assert stored == {torch.bfloat16 if dtype == "bf16" else torch.float16}
    _, model = nima_model(tmp_path / "one")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # loaded into the fp32 model


def test_tokenizer_files_and_generation_defaults(imported: dict, tmp_path: Path) -> None:
    """tokenizer.json and tokenizer_config.json are copied; generation_config.json sets the spec's defaults."""
    hf, _ = imported["llama"]
    source = save(hf, tmp_path / "hf")
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(source / "tokenizer.json"))
    (source / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    (source / "generation_config.json").write_text(
        '{"do_sample": true, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [2, 5], "max_new_tokens": 40}'
    )
    import_hf(source, tmp_path / "m")
    assert (tmp_path / "m" / "tokenizer_config.json").read_text() == '{"chat_template": "{{ messages }}"}'
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    gen = load_spec(tmp_path / "m" / "nima.json").generation
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.eos_token_ids, gen.max_new_tokens) == (
        True,
        0.6,
        0.9,
        [2, 5],
        40,
    )


def test_the_spec_reads_like_a_spec(imported: dict) -> None:
    """The imported nima.json is an ordinary spec: Mistral's window, Qwen2's q/k/v biases, Qwen3's qk-norm
    and explicit head dim, Llama's linear RoPE scaling, GPT-2's tanh GELU and tied head, Gemma's scaled
    embeddings, 1 + w norm gain and GELU (tanh) gate; Gemma 2's local/full cycle, soft-caps, sandwich norms
    and attention scale."""
    specs = {case: load_spec(folder / "nima.json") for case, (_, folder) in imported.items()}
    assert specs["mistral"].attention.pattern.model_dump() == {"kind": "local", "window": 5}
    assert (specs["qwen2"].bias, specs["qwen2"].attention.qkv_bias) == (False, True)
    assert (specs["qwen3"].attention.qk_norm, specs["qwen3"].head_dim) == (True, 32)
    assert specs["llama-tied-linear-rope"].position.scaling_factor == 2.0
    assert specs["llama-tied-linear-rope"].tie_embeddings and not specs["llama"].tie_embeddings
    assert (specs["gpt2"].ffn.kind, specs["gpt2"].ffn.approximate, specs["gpt2"].position.kind) == (
        "gelu",
        "tanh",
        "learned",
    )
    assert specs["gpt2-exact-gelu-untied-unscaled"].ffn.approximate == "none"
    assert specs["gpt2-exact-gelu-untied-unscaled"].attention.scale == 1.0 and specs["gpt2"].attention.scale is None
    gemma2 = specs["gemma2"]
    assert [p.model_dump() for p in gemma2.attention.patterns] == [{"kind": "local", "window": 5}, {"kind": "full"}]
    assert (gemma2.attention.softcap, gemma2.logit_softcap, gemma2.norm.placement) == (3.0, 4.0, "sandwich")
    assert gemma2.attention.scale == 24**-0.5
    gemma = specs["gemma"]
    assert (gemma.scale_embeddings, gemma.norm.offset, gemma.ffn.kind, gemma.ffn.approximate, gemma.head_dim) == (
        True,
        1.0,
        "geglu",
        "tanh",
        24,
    )
