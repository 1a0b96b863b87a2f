"""Shared fixtures for the export tests: a small trained-looking model folder and its bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bundle_helpers import SPEC, invoke, shakespeare
from click.testing import Result
from tokenizers import Tokenizer, models, pre_tokenizers, trainers


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `nima build` output folder with a small BPE tokenizer beside the weights."""
    root = tmp_path_factory.mktemp("src")
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    out = root / "model"
    assert invoke("build", spec_path, "-o", out, "--seed", 3).exit_code == 0
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=96, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:80]
    )
    tok.train_from_iterator(["to be or not to be, that is the question"] * 20, trainer)
    tok.save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    result = invoke("export", "--onnx", model_dir, "-o", out)
    return out, result


def train_briefly(root: Path, **changes: object) -> Path:
    """A small byte-level model (`SPEC` with ``changes``) trained briefly on Shakespeare, saved under ``root``."""
    import torch

    from nima.builders import build_model, save_build
    from nima.spec import spec_from_dict

    text = shakespeare()[:50_000]
    data = torch.tensor([b % 128 for b in text])
    spec = spec_from_dict(
        {
            **SPEC,
            "name": "trained-tiny",
            "vocab_size": 128,
            "d_model": 64,
            "ffn": {"kind": "swiglu", "hidden": 128},
            "init": {"kind": "normal"},
            **changes,
        }
    )
    model = build_model(spec, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(data) - 33, (16,), generator=gen)
        batch = torch.stack([data[s : s + 33] for s in starts])  # (16, 33)
        logits, _ = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, spec.vocab_size), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 3.0, "the model should have learned something"
    return save_build(model.eval(), spec, root / "model")


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level model trained briefly on Shakespeare, so its logits are peaked like a real
    model's: quantization is judged on that, not on near-uniform random-weight logits."""
    return train_briefly(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def trained_tied_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with a tied head over a 256-token table: a table past 8,192 values, which the exporter's
    constant folding leaves as ``Transpose(table)`` before the head MatMul, as it does for real models."""
    return train_briefly(tmp_path_factory.mktemp("trained-tied"), vocab_size=256, tie_embeddings=True)
