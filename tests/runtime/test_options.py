"""Bad options, prompts and bundles are refused before any work, with a message naming them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nima.builders.models import DecoderLM
from nima.cli import app
from nima.runtime import GenerateError, Generator
from nima.runtime.bundle import RECORDED
from nima.runtime.options import resolve_options
from nima.spec import GenerationSpec
from nima.train.tokenizer import char_tokenizer

BAD_OPTIONS = [
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"temperature": -0.5}, "temperature"),
    ({"num_beams": 0}, "num_beams"),
    ({"top_k": -1}, "top_k"),
    ({"topp": 0.9}, "topp"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ({"num_beams": 2, "do_sample": True}, "num_beams"),
    ({"num_return_sequences": 2}, "num_return_sequences"),
    ({"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens"),
    ({"stop_strings": [""]}, "stop_strings"),
    ({"seed": -1}, "seed"),
    ({"temperature": float("inf")}, "temperature"),
    ({"length_penalty": float("nan")}, "length_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"num_beams": 4097}, "num_beams"),  # each beam holds a cache: a billion of them took 8 GB before failing
    ({"num_return_sequences": 10**6, "do_sample": True}, "num_return_sequences"),
]


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_bad_options_are_named(options: dict[str, object], named: str) -> None:
    with pytest.raises(GenerateError, match=named):
        resolve_options(GenerationSpec(), options)


def test_beams_turn_default_sampling_off() -> None:
    sampling = GenerationSpec(do_sample=True, temperature=0.8)
    assert resolve_options(sampling, {"num_beams": 4}).do_sample is False
    assert resolve_options(sampling, {}).do_sample is True


def test_bad_prompts_and_providers(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["gpt2"]
    gen = Generator(path)
    with pytest.raises(GenerateError, match="context"):
        gen.generate([list(range(64)) * 2], max_new_tokens=4)
    with pytest.raises(GenerateError, match="outside the vocabulary"):
        gen.generate([[1, 64]])
    with pytest.raises(GenerateError, match="empty"):
        gen.generate([[]])
    with pytest.raises(GenerateError, match="no tokenizer"):
        gen.generate(["text"])
    with pytest.raises(GenerateError, match="stop_strings"):
        gen.generate([[1]], stop_strings=["x"])
    with pytest.raises(GenerateError, match="provider 'tpu'"):
        Generator(path, provider="tpu")
    with pytest.raises(GenerateError, match="option eos_token_ids: 64 is outside the vocabulary"):
        gen.generate([[1]], eos_token_ids=[3, 64])
    for threads in (0, -1):
        with pytest.raises(GenerateError, match="threads"):
            Generator(path, threads=threads)


def test_a_prompt_the_tokenizer_refuses(tmp_path: Path, text_bundle: tuple[Path, DecoderLM]) -> None:
    """A character a char-level vocabulary lacks is named; in the CLI, nothing is printed but the error."""
    bundle = tmp_path / "bundle"
    shutil.copytree(text_bundle[0], bundle)
    char_tokenizer("abc d").save(str(bundle / "tokenizer.json"))
    with pytest.raises(GenerateError, match="the character '€' is not in the tokenizer's vocabulary"):
        Generator(bundle).generate(["ab €"])
    result = CliRunner().invoke(app, ["generate", str(bundle), "--prompt", "ab €", "--max-new-tokens", "2"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "error: prompt 'ab €': the character '€' is not in the tokenizer's vocabulary"


def test_bad_bundles(tmp_path: Path, bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    with pytest.raises(GenerateError, match="no such bundle"):
        Generator(tmp_path / "missing")
    (tmp_path / "data.txt").write_text("text")
    with pytest.raises(GenerateError, match="data.txt: is a file, not a bundle folder"):
        Generator(tmp_path / "data.txt")
    with pytest.raises(GenerateError, match="nima.json"):
        Generator(tmp_path)
    (tmp_path / "spec.yaml").write_text("name: x")
    with pytest.raises(GenerateError, match="spec.yaml: a spec file, not a bundle; export a model first: nima export"):
        Generator(tmp_path / "spec.yaml")
    model = tmp_path / "my model"  # a model folder (nima build / train / import): weights, no graph
    model.mkdir()
    (model / "nima.json").write_text((bundles["gpt2"][0] / "nima.json").read_text())
    (model / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(GenerateError) as err:
        Generator(model)
    assert str(err.value) == (
        f"{model}: a model folder (weights, no ONNX graph), not a bundle; export it first: "
        f"nima export --onnx '{model}' -o '{model}-bundle'"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    source = bundles["gpt2"][0]
    (broken / "nima.json").write_text((source / "nima.json").read_text())
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(GenerateError, match="model.onnx"):
        Generator(broken)
    (broken / "model.onnx").write_bytes((source / "model.onnx").read_bytes())
    (broken / "tokenizer.json").write_text("{")
    with pytest.raises(GenerateError, match="tokenizer.json"):
        Generator(broken)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_layers": 3}, "nima.json says 3 layers, the graph caches 2"),
        ({"n_layers": 1}, "nima.json says 1 layers, the graph caches 2"),
        ({"vocab_size": 1000}, "nima.json says vocab_size 1000, the graph's logits have 64"),
        ({"d_model": 64}, "nima.json says head dim 16, the graph's cache has 8"),
    ],
)
def test_a_spec_that_does_not_match_the_graph(
    change: dict[str, int], message: str, tmp_path: Path, bundles: dict[str, tuple[Path, DecoderLM]]
) -> None:
    """A nima.json edited or copied from another model is refused when the bundle loads, not met later
    as an ORT error about an input name or an index out of range: here against the graph itself, with
    the sizes bundle.json records taken out (they are checked first: `test_bundle_files.py`)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["gpt2"][0], bundle)
    spec = json.loads((bundle / "nima.json").read_text())
    (bundle / "nima.json").write_text(json.dumps({**spec, **change}))
    manifest = json.loads((bundle / "bundle.json").read_text())
    for key, _ in RECORDED:
        manifest.pop(key, None)
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(GenerateError, match=message):
        Generator(bundle)


def test_a_bundle_whose_spec_extends_a_file_is_refused(tmp_path: Path, text_bundle: tuple[Path, DecoderLM]) -> None:
    """A bundle's nima.json is resolved: an ``extends:`` there would read outside the bundle."""
    bundle = tmp_path / "bundle"
    shutil.copytree(text_bundle[0], bundle)
    (tmp_path / "outside.yaml").write_text("extends: tiny\n")
    spec = json.loads((bundle / "nima.json").read_text())
    (bundle / "nima.json").write_text(json.dumps({**spec, "extends": "../outside.yaml"}))
    with pytest.raises(GenerateError, match="extends: a resolved spec"):
        Generator(bundle)


def test_tampered_bundles_fail_in_one_line(tmp_path: Path, text_bundle: tuple[Path, DecoderLM]) -> None:
    """A manifest flag the graph cannot honour (one buffer as past and present on a portable graph) and a
    tokenizer whose ids pass the model's vocabulary: each a `GenerateError` naming the bundle, never ORT's
    traceback, and in the CLI one `error:` line with exit 2."""
    shared = tmp_path / "shared"
    shutil.copytree(text_bundle[0], shared)
    manifest = json.loads((shared / "bundle.json").read_text())
    (shared / "bundle.json").write_text(json.dumps({**manifest, "share_buffer": True}))
    with pytest.raises(GenerateError, match="ONNX Runtime failed on this bundle"):
        Generator(shared).generate("To be", max_new_tokens=4)
    result = CliRunner().invoke(app, ["generate", str(shared), "--prompt", "To be", "--max-new-tokens", "4"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output

    foreign = tmp_path / "foreign"
    shutil.copytree(text_bundle[0], foreign)
    big = char_tokenizer("".join(chr(c) for c in range(0x4E00, 0x4E00 + 4000)) + "To be")
    big.save(str(foreign / "tokenizer.json"))
    with pytest.raises(GenerateError, match="past the model's vocabulary"):
        Generator(foreign).generate("To be " + chr(0x4E00 + 3999), max_new_tokens=4)  # a character sorted last


def test_a_spec_longer_than_the_graphs_positions_fails_in_one_line(
    tmp_path: Path, bundles: dict[str, tuple[Path, DecoderLM]]
) -> None:
    """A nima.json whose max_seq_len passes the graph's learned position table, bundle.json edited to match:
    the first position past the table is ONNX Runtime's index error, reported as one `GenerateError` naming
    the bundle. (nima.json edited alone is refused at load: `test_bundle_files.py`.)"""
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["gpt2"][0], bundle)
    spec = json.loads((bundle / "nima.json").read_text())
    (bundle / "nima.json").write_text(json.dumps({**spec, "max_seq_len": 4 * spec["max_seq_len"]}))
    manifest = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**manifest, "context_length": 4 * spec["max_seq_len"]}))
    prompt = [5] * (spec["max_seq_len"] + 8)  # positions past the graph's table
    with pytest.raises(GenerateError, match="ONNX Runtime failed on this bundle"):
        Generator(bundle).generate([prompt], max_new_tokens=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vocab_size": None}, "nima.json: vocab_size: missing"),
        ({"n_layers": "2"}, "nima.json: n_layers: '2' is not a positive integer"),
        ({"max_seq_len": True}, "nima.json: max_seq_len: True is not a positive integer"),
        ({"attention": {"n_heads": 0}}, "nima.json: attention.n_heads: 0 is not a positive integer"),
        ({"attention": 4}, "nima.json: attention: missing, or not a section"),
        ({"architecture": "encoder"}, "nima.json: architecture: 'encoder' is not one of decoder, encoder-decoder"),
        ({"generation": {"top_p": 2.0}}, "nima.json: generation.top_p: Input should be less than or equal to 1"),
        ({"generation": {"topp": 0.5}}, "nima.json: generation.topp: unknown option"),
        ({"generation": []}, "nima.json: generation: not a section"),
    ],
)
def test_a_bundle_spec_is_checked_where_the_runtime_reads_it(
    change: dict[str, object], message: str, tmp_path: Path, bundles: dict[str, tuple[Path, DecoderLM]]
) -> None:
    """The runtime reads nima.json without the spec's Pydantic models (`nima.runtime.bundle_spec`): what it
    reads is still checked, and a bad value is named with its file and field."""
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["gpt2"][0], bundle)
    spec = json.loads((bundle / "nima.json").read_text())
    edited = {**spec, **change}
    if change.get("vocab_size", 0) is None:
        del edited["vocab_size"]
    (bundle / "nima.json").write_text(json.dumps(edited))
    with pytest.raises(GenerateError) as err:
        Generator(bundle)
    assert str(err.value).startswith(f"{bundle / 'nima.json'}: ") and message in str(err.value), str(err.value)
    for text in ("{not json", '{"a": 1, "a": 2}', "[" * 100_000 + "]" * 100_000, '{"n_layers": 1' + "0" * 5000 + "}"):
        (bundle / "nima.json").write_text(text)  # bad JSON, a repeated key, too deep, an integer past int()'s limit
        with pytest.raises(GenerateError, match="nima.json: not a readable spec"):
            Generator(bundle)
    (bundle / "nima.json").write_text(json.dumps({**spec, "architecture": ["decoder"]}))
    with pytest.raises(GenerateError, match="nima.json: architecture: \\['decoder'\\] is not one of"):
        Generator(bundle)


def test_the_whole_spec_on_demand(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """`Bundle.model_spec` is the validated spec; its figures agree with what decoding reads."""
    generator = Generator(bundles["gpt2"][0])
    whole, read = generator.bundle.model_spec, generator.spec
    assert (whole.vocab_size, whole.max_seq_len, whole.d_model, whole.n_layers, whole.n_kv_heads, whole.head_dim) == (
        read.vocab_size,
        read.max_seq_len,
        read.d_model,
        read.n_layers,
        read.n_kv_heads,
        read.head_dim,
    )
    assert whole.generation == read.generation and whole.architecture == read.architecture
