"""Shared fixtures for the export tests: a small trained-looking model folder and its bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bundle_helpers import SPEC, invoke
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
