"""`nima train MODEL_DIR`: fine-tuning starts from the folder's weights and encodes with its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizer_support import shakespeare_tokenizer
from tokenizers import Tokenizer
from train_support import invoke, shakespeare_text, tiny_spec, write_spec
from transformers_support import tiny_llama

from nima.builders import build_model
from nima.spec import load_resolved_spec

STEPS = ["--set", "training.max_steps=2", "--set", "training.eval_every=2", "--set", "training.checkpoint_every=2"]
STILL = ["--set", "training.optimizer.lr=1e-9"]  # two steps that barely move the weights
TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"


def data_file(folder: Path) -> Path:
    path = folder / "data.txt"
    path.write_text(shakespeare_text(), encoding="utf-8")
    return path


def test_a_built_folder_is_the_starting_point(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny_spec())
    built = tmp_path / "built"
    assert invoke("build", spec, "-o", built, "--seed", "5").exit_code == 0
    result = invoke("train", built, "--data", data_file(tmp_path), "-o", tmp_path / "run", *STEPS, *STILL)
    assert result.exit_code == 0, result.output
    start, end = load_file(str(built / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    assert start.keys() == end.keys()
    for name in start:
        assert torch.allclose(start[name], end[name], atol=1e-5), name
    # the spec's own initialisation (training.seed) is another model: the run did not start from it
    fresh = build_model(load_resolved_spec(built / "nima.json"), seed=1337).state_dict()
    assert max((fresh[name] - start[name]).abs().max().item() for name in start) > 0.05
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["started_from"] == str(built)


def test_an_imported_model_fine_tunes_with_its_own_tokenizer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = shakespeare_tokenizer(300)
    hf = tiny_llama(tmp_path / "hf", vocab_size=320)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(hf)  # transformers 5: tokenizer.json, tokenizer_config.json, chat_template.jinja
    assert (hf / "chat_template.jinja").read_text() == TEMPLATE
    assert invoke("import", hf, "-o", tmp_path / "model").exit_code == 0
    run = tmp_path / "run"
    settings = ["--set", "training.batch_size=4", "--set", "max_seq_len=64", "--set", "training.cpu_threads=1"]
    result = invoke("train", tmp_path / "model", "--data", data_file(tmp_path), "-o", run, *STEPS, *STILL, *settings)
    assert result.exit_code == 0, result.output
    assert Tokenizer.from_file(str(run / "tokenizer.json")).get_vocab() == tokenizer.get_vocab()
    assert json.loads((run / "run.json").read_text())["tokenizer"]["vocab_size"] == 300
    start, end = load_file(str(tmp_path / "model" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    for name in start:
        assert torch.allclose(start[name], end[name], atol=1e-5), name
    # the run folder is a model folder: it fine-tunes again, and generation reads its tokenizer
    again = invoke("train", run, "--data", data_file(tmp_path), "-o", tmp_path / "again", *STEPS, *settings)
    assert again.exit_code == 0, again.output
    # the chat template and the special tokens travel: import, fine-tuning twice, export; the server renders it
    for folder in (tmp_path / "model", run, tmp_path / "again"):
        for name in ("chat_template.jinja", "tokenizer_config.json"):
            assert (folder / name).read_bytes() == (hf / name).read_bytes(), (folder, name)
    exported = invoke("export", "--onnx", tmp_path / "again", "-o", tmp_path / "bundle", "--no-verify")
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "bundle" / "chat_template.jinja").read_text() == TEMPLATE
    from nima.serve.chat import bundle_template, render

    said = render(bundle_template(tmp_path / "bundle"), [{"role": "user", "content": "hi"}], False)
    assert said == "<user>hi"


def test_what_cannot_be_a_start_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny_spec())
    built = tmp_path / "built"
    assert invoke("build", spec, "-o", built).exit_code == 0
    data = data_file(tmp_path)
    same = invoke("train", built, "--data", data, "-o", built, "--force")
    assert same.exit_code == 2 and "is the model folder the run starts from" in same.output
    assert (built / "model.safetensors").is_file()  # nothing removed
    (tmp_path / "empty").mkdir()
    empty = invoke("train", tmp_path / "empty", "--data", data)
    assert empty.exit_code == 2 and "a folder without nima.json" in empty.output
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "nima.json").write_text((built / "nima.json").read_text())
    none = invoke("train", weightless, "--data", data, "-o", tmp_path / "r1")
    assert none.exit_code == 2 and "no model.safetensors to start from" in none.output
    big = shakespeare_tokenizer(400)  # more ids than the tiny spec's 96
    big.save(str(built / "tokenizer.json"))
    wrong = invoke("train", built, "--data", data, "-o", tmp_path / "r2")
    assert wrong.exit_code == 2 and "it is not this model's tokenizer" in wrong.output


def word_tokenizer(vocab: int) -> Tokenizer:
    """A word-level tokenizer with T5's special ids (<pad> 0, </s> 1, <unk> 2) and its source template
    ("$A </s>"), over the words w3 ... w{vocab-1}."""
    from tokenizers import models, pre_tokenizers, processors

    words = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, vocab)}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tokenizer


def test_an_imported_encoder_decoder_fine_tunes_on_pairs(tmp_path: Path) -> None:
    """A T5 folder with its tokenizer: the run starts from its weights, encodes sources with the tokenizer's
    template (</s> appended) and targets between T5's start (padding) and end ids, and its folder exports and
    generates."""
    transformers = pytest.importorskip("transformers")
    vocab = 64
    config = transformers.T5Config(
        vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    torch.manual_seed(1)
    hf = tmp_path / "hf"
    transformers.T5ForConditionalGeneration(config).save_pretrained(hf)
    word_tokenizer(vocab).save(str(hf / "tokenizer.json"))
    assert invoke("import", hf, "-o", tmp_path / "model").exit_code == 0
    rng = torch.Generator().manual_seed(2)
    lines = []
    for _ in range(40):
        words = [f"w{int(i)}" for i in torch.randint(3, vocab, (6,), generator=rng)]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    settings = ["--set", "training.batch_size=4", "--set", "training.cpu_threads=1", "--set", "max_seq_len=16"]
    result = invoke("train", tmp_path / "model", "--data", tmp_path / "pairs.tsv", "-o", run, *STEPS, *STILL, *settings)
    assert result.exit_code == 0, result.output
    record = json.loads((run / "run.json").read_text())
    assert record["seq2seq"] == {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    start, end = load_file(str(tmp_path / "model" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    for name in start:
        assert torch.allclose(start[name], end[name], atol=1e-5), name
    sources = np.load(run / "data" / "train.source.npy")
    offsets = np.load(run / "data" / "train.source.offsets.npy")
    assert all(sources[stop - 1] == 1 for stop in offsets[1:])  # every source ends with </s>, as T5 reads them
    assert invoke("export", "--onnx", run, "-o", tmp_path / "bundle").exit_code == 0
    out = invoke("generate", tmp_path / "bundle", "--prompt", "w5 w6 w7", "--greedy", "--max-new-tokens", "4")
    assert out.exit_code == 0, out.output


def test_an_encoder_decoder_without_its_ids_is_refused(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4)
    hf = tmp_path / "hf"
    transformers.T5ForConditionalGeneration(config).save_pretrained(hf)
    assert invoke("import", hf, "-o", tmp_path / "model").exit_code == 0
    (tmp_path / "pairs.tsv").write_text("w3 w4\tw4 w3\n" * 8, encoding="utf-8")
    result = invoke("train", tmp_path / "model", "--data", tmp_path / "pairs.tsv", "-o", tmp_path / "run")
    assert result.exit_code == 2 and "fine-tuning an encoder-decoder needs its tokenizer.json" in result.output
    assert not (tmp_path / "run").exists()
