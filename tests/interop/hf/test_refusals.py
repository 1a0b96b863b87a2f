"""What `nima import` refuses: one `error:` line naming the file, key or tensor, exit code 2, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hf_support import random_model, save
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from nima.cli import app


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **changes}))


def drop_key(folder: Path, key: str) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop(key, None)
    path.write_text(json.dumps(config))


def edit_weights(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def pickled(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def drop(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda tensors: tensors.pop(name)


def reshape(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = tensors[name][:, :-1].contiguous()

    return change


def extra(tensors: dict[str, torch.Tensor]) -> None:
    tensors["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)


def shard_lacks(folder: Path) -> None:
    """An index that maps every tensor to model.safetensors, one of which that file no longer holds."""
    names = list(load_file(str(folder / "model.safetensors")))
    edit_weights(folder, drop("model.layers.0.mlp.up_proj.weight"))
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, "model.safetensors")}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "pickle": (pickled, "pytorch_model.bin: a pickled PyTorch checkpoint"),
    "custom code": (
        lambda f: edit_config(f, auto_map={"AutoModelForCausalLM": "modeling_x.X"}),
        "config.json: auto_map: this model needs its own Python code (trust_remote_code)",
    ),
    "unknown model_type": (lambda f: edit_config(f, model_type="mamba"), "model_type: 'mamba' is not supported"),
    "rope scaling kind": (
        lambda f: edit_config(f, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}),
        "rope_parameters: rope_type 'yarn' is not supported",
    ),
    "missing tensor": (
        lambda f: edit_weights(f, drop("model.layers.1.mlp.up_proj.weight")),
        "the checkpoint has no tensor 'model.layers.1.mlp.up_proj.weight'",
    ),
    "mis-shaped tensor": (
        lambda f: edit_weights(f, reshape("model.layers.0.self_attn.k_proj.weight")),
        "tensor 'model.layers.0.self_attn.k_proj.weight' has shape (32, 63), where the config's sizes need (32, 64)",
    ),
    "a tensor with no place": (
        lambda f: edit_weights(f, extra),
        "the checkpoint's tensor 'model.layers.0.self_attn.o_proj.bias' has no place in the spec",
    ),
    "no config": (lambda f: (f / "config.json").unlink(), "no config.json here"),
    "a RoPE base that is no number": (
        lambda f: edit_config(f, rope_parameters={"rope_type": "default", "rope_theta": "x"}),
        "rope_parameters.rope_theta: expected a number",
    ),
    "a window that is no number": (
        lambda f: edit_config(f, sliding_window="abc"),
        "sliding_window: expected a non-negative integer",
    ),
    "a shard index naming a tensor its shard lacks": (
        shard_lacks,
        "cannot read tensor 'model.layers.0.mlp.up_proj.weight'",
    ),
    "a config nested too deeply": (
        lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000),
        "config.json: not readable JSON (nested too deeply)",
    ),
    "no heads": (lambda f: edit_config(f, num_attention_heads=0, head_dim=None), "config.json: "),
    "an epsilon of 400 digits": (lambda f: edit_config(f, rms_norm_eps=10**400), "rms_norm_eps: 1000"),
    "an infinite epsilon": (
        lambda f: (f / "config.json").write_text(
            (f / "config.json").read_text().rstrip().removesuffix("}") + ', "rms_norm_eps": Infinity}'
        ),
        "rms_norm_eps: expected a finite number",
    ),
    "layer kinds for other layers": (
        lambda f: edit_config(f, layer_types=["full_attention"] * 30_000),
        "layer_types: 30,000 entries for 2 layers",
    ),
    "ten billion layers": (lambda f: edit_config(f, num_hidden_layers=10**10), "n_layers: input should be less"),
    "integer weights": (
        lambda f: edit_weights(f, lambda t: t.update({"lm_head.weight": t["lm_head.weight"].to(torch.int32)})),
        "tensor 'lm_head.weight' holds torch.int32; weights are floating point",
    ),
    "a truncated tokenizer": (
        lambda f: (f / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": {'),
        "tokenizer.json: not a readable tokenizer.json",
    ),
    "a tokenizer config that is no object": (
        lambda f: (f / "tokenizer_config.json").write_text("[1, 2]"),
        "tokenizer_config.json: expected a JSON object",
    ),
    "a chat template that is no text": (
        lambda f: (f / "chat_template.jinja").write_bytes(b"\xff\xfe{{ x }}"),
        "chat_template.jinja: not readable UTF-8 text",
    ),
    "a shard index nested too deeply": (
        lambda f: (f / "model.safetensors.index.json").write_text("[" * 100_000 + "]" * 100_000),
        "model.safetensors.index.json: not readable JSON (nested too deeply)",
    ),
}


# refusals of what only encoder-decoders have: (case -> (source model, spoil, message))
SEQ2SEQ_CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "T5 activation": (
        "t5",
        lambda f: edit_config(f, feed_forward_proj="gated-relu6"),
        "feed_forward_proj: 'gated-relu6': a gate of 'relu6' is not supported",
    ),
    "T5 missing relative bias": (
        "t5",
        lambda f: edit_weights(f, drop("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")),
        "no tensor 'decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'",
    ),
    "BART stacks of different widths": (
        "bart",
        lambda f: edit_config(f, encoder_ffn_dim=128),
        "encoder_ffn_dim: 128 with decoder_ffn_dim 96: Nima's stacks share this size",
    ),
    "mBART's pre-norm": (
        "bart",
        lambda f: edit_config(f, normalize_before=True),
        "normalize_before: pre-norm BART variants (mBART's) are not supported",
    ),
    "Marian's separate vocabularies": (
        "marian",
        lambda f: edit_config(f, share_encoder_decoder_embeddings=False),
        "share_encoder_decoder_embeddings: separate source and target embeddings",
    ),
    "Gemma 2's ten billion layers, without layer kinds": (  # its layer kinds were built first: 12 GB in a minute
        "gemma2",
        lambda f: (edit_config(f, num_hidden_layers=10**10), drop_key(f, "layer_types")),
        "num_hidden_layers: 10,000,000,000; expected 1 to 1,024",
    ),
    "T5 of no width": ("t5", lambda f: edit_config(f, d_model=0), "config.json: an impossible value"),
    "BART's logit bias missing": (
        "bart",
        lambda f: edit_weights(f, drop("final_logits_bias")),
        "the checkpoint has no tensor 'final_logits_bias'",
    ),
}


@pytest.mark.parametrize("case", list(SEQ2SEQ_CASES))
def test_encoder_decoder_refusals(case: str, tmp_path: Path) -> None:
    model, spoil, message = SEQ2SEQ_CASES[case]
    source = save(random_model(model, 4), tmp_path / "hf")
    spoil(source)
    result = CliRunner().invoke(app, ["import", str(source), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(random_model("llama", 3), tmp_path_factory.mktemp("refusals") / "llama")


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_one_line_and_nothing_written(case: str, llama_folder: Path, tmp_path: Path) -> None:
    spoil, message = CASES[case]
    source = tmp_path / "hf"
    source.mkdir()
    for path in llama_folder.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    spoil(source)
    result = CliRunner().invoke(app, ["import", str(source), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no target, no temporary folder


def test_force_replaces_only_a_model_folder(llama_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(app, ["import", str(llama_folder), "-o", str(out)]).exit_code == 0
    again = runner.invoke(app, ["import", str(llama_folder), "-o", str(out)])
    assert again.exit_code == 2 and "pass --force" in again.stderr
    assert runner.invoke(app, ["import", str(llama_folder), "-o", str(out), "--force"]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["import", str(llama_folder), "-o", str(out), "--force"])
    assert refused.exit_code == 2 and "holds notes.txt" in refused.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_a_target_that_is_a_symbolic_link_is_refused_up_front(llama_folder: Path, tmp_path: Path) -> None:
    """A link to an empty folder, or a dangling one: refused before the work (it failed after the whole
    import and export with "another process wrote it meanwhile?"); nothing is written."""
    from nima.export.errors import BundleError
    from nima.export.target_folder import check_target

    (tmp_path / "empty").mkdir()
    for name, points in (("to-empty", tmp_path / "empty"), ("dangling", tmp_path / "nowhere")):
        link = tmp_path / name
        link.symlink_to(points)
        result = CliRunner().invoke(app, ["import", str(llama_folder), "-o", str(link)])
        assert result.exit_code == 2 and "is a symbolic link" in result.stderr, result.output
        with pytest.raises(BundleError, match="is a symbolic link"):
            check_target(link, force=False)
    assert list((tmp_path / "empty").iterdir()) == [] and not (tmp_path / "nowhere").exists()
