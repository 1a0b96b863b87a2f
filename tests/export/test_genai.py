"""onnxruntime-genai loads a Nima bundle through its genai_config.json and decodes what PyTorch does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from bundle_helpers import SPEC, invoke, shakespeare
from click.testing import Result
from tokenizers import Tokenizer

from nima.builders import build_model, load_weights
from nima.spec import load_spec

og = pytest.importorskip("onnxruntime_genai")


def torch_greedy(model_dir: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """A plain PyTorch greedy loop over the full sequence (no cache), the independent reference."""
    spec = load_spec(model_dir / "nima.json")
    model = load_weights(build_model(spec), model_dir / "model.safetensors").eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(new_tokens):
            logits, _ = model(ids)
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids[0].tolist()


def genai_greedy(bundle_dir: Path, prompt: list[int], total: int) -> list[int]:
    model = og.Model(str(bundle_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=total, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)]


def test_genai_runs_the_ort_target(model_dir: Path, tmp_path: Path) -> None:
    """The fused graph (ORT contrib ops) also loads in onnxruntime-genai and decodes the same."""
    out = tmp_path / "ort"
    result = invoke("export", "--onnx", model_dir, "-o", out, "--target", "ort")
    assert result.exit_code == 0, result.output
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MultiHeadAttention" in ops  # (RMSNorm is fused by ORT itself when the session loads)
    prompt = [5, 9, 17, 33, 2]
    assert genai_greedy(out, prompt, 40) == torch_greedy(model_dir, prompt, 35)


def test_genai_greedy_equals_pytorch(bundle: tuple[Path, Result], model_dir: Path) -> None:
    out, result = bundle
    assert result.exit_code == 0, result.output
    prompt = [5, 9, 17, 33, 2]
    total = 40
    got = genai_greedy(out, prompt, total)
    want = torch_greedy(model_dir, prompt, total - len(prompt))
    assert got == want


def char_level_model(root: Path, spare_ids: int) -> tuple[Path, Tokenizer]:
    """A model folder with a character-level tokenizer (no end token; id 0 is ``\\n``) and a vocabulary of
    the tokenizer's ids plus ``spare_ids``. Its weights are zero, so every logit is 0 and greedy decoding
    picks id 0 at every step: the newline a genai config with ``eos_token_id: 0`` would stop at."""
    from safetensors.torch import load_file, save_file

    from nima.train.tokenizer import char_tokenizer

    tokenizer = char_tokenizer(shakespeare()[:20_000].decode())
    assert tokenizer.id_to_token(0) == "\n" and tokenizer.token_to_id("<|endoftext|>") is None
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "name": "char", "vocab_size": tokenizer.get_vocab_size() + spare_ids}))
    model = root / "model"
    assert invoke("build", spec, "-o", model).exit_code == 0
    weights = load_file(str(model / "model.safetensors"))
    save_file({name: torch.zeros_like(w) for name, w in weights.items()}, str(model / "model.safetensors"))
    tokenizer.save(str(model / "tokenizer.json"))
    return model, tokenizer


def test_a_spare_id_ends_genai_generation_not_the_newline(tmp_path: Path) -> None:
    model, tokenizer = char_level_model(tmp_path, spare_ids=6)
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", model, "-o", out, "--no-verify")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "genai_config.json").read_text())
    assert config["model"]["eos_token_id"] == tokenizer.get_vocab_size()  # the first id the tokenizer lacks
    prompt = tokenizer.encode("First Citizen:").ids
    got = genai_greedy(out, prompt, 30)
    assert got == torch_greedy(model, prompt, 30 - len(prompt))  # newlines all the way, no early stop
    assert got[len(prompt) :] == [0] * (30 - len(prompt))


def test_a_tokenizer_using_every_id_without_an_end_token_gets_no_genai_config(tmp_path: Path) -> None:
    model, _ = char_level_model(tmp_path, spare_ids=0)
    out = tmp_path / "bundle"
    result = invoke("export", "--onnx", model, "-o", out, "--no-verify")
    assert result.exit_code == 0, result.output
    assert not (out / "genai_config.json").exists() and not (out / "tokenizer_config.json").exists()
    said = " ".join(result.output.split())  # rich wraps the warning
    assert "warning: genai_config.json left out: onnxruntime-genai needs an end token;" in said
    assert "set generation.eos_token_ids in the spec" in said
    assert "warning: tokenizer_config.json left out: onnxruntime-genai's tokenizer cannot read a WordLevel" in said
    card = (out / "README.md").read_text()
    assert "genai\\_config.json left out" in card and "og.Model" not in card

    # naming the end token in the spec gives genai its config again
    spec = json.loads((model / "nima.json").read_text())
    spec["generation"]["eos_token_ids"] = [1]
    (model / "nima.json").write_text(json.dumps(spec))
    again = invoke("export", "--onnx", model, "-o", tmp_path / "named", "--no-verify")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "named" / "genai_config.json").read_text())["model"]["eos_token_id"] == 1


def test_genai_tokenizer_reads_a_bpe_bundle_as_tokenizers_does(bundle: tuple[Path, Result]) -> None:
    out, result = bundle
    assert result.exit_code == 0, result.output
    reference = Tokenizer.from_file(str(out / "tokenizer.json"))
    tokenizer = og.Tokenizer(og.Model(str(out)))
    for text in ("to be or not to be", "that is the question", " to be,  or not"):  # in its alphabet
        want = reference.encode(text).ids
        assert list(tokenizer.encode(text)) == want
        assert tokenizer.decode(np.array(want, dtype=np.int32)) == text  # (the fixture's has no decoder)


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_genai_tokenizer_reads_nimas_byte_level_tokenizers(tmp_path: Path, kind: str) -> None:
    """The tokenizers `nima train` makes of the BPE kinds, on text with newlines and non-ASCII letters."""
    from nima.train.tokenizer import train_tokenizer

    reference = train_tokenizer(kind, shakespeare()[:50_000].decode(), 300).tokenizer
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "name": kind, "vocab_size": 300}))
    assert invoke("build", spec, "-o", tmp_path / "model").exit_code == 0
    reference.save(str(tmp_path / "model" / "tokenizer.json"))
    result = invoke("export", "--onnx", tmp_path / "model", "-o", tmp_path / "bundle", "--no-verify")
    assert result.exit_code == 0, result.output
    tokenizer = og.Tokenizer(og.Model(str(tmp_path / "bundle")))
    for text in ("First Citizen:\nBefore we proceed", "  Ünïcödé, naïve café!\n\n", "tabs\tand  spaces "):
        want = reference.encode(text).ids
        assert list(tokenizer.encode(text)) == want
        assert tokenizer.decode(np.array(want, dtype=np.int32)) == reference.decode(want) == text
