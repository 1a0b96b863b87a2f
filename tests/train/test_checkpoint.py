"""Checkpoints: no pickle anywhere, atomic folders, the last few kept, corruption caught, state restored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from train_support import CPU, make_corpus, make_run

from nima.builders import build_model, load_weights
from nima.spec import spec_from_dict
from nima.train.checkpoint import TrainState, checkpoint_steps, load_checkpoint, read_checkpoint, save_checkpoint
from nima.train.errors import TrainError
from nima.train.loop import train_step
from nima.train.run import build_run


def _trained(steps: int = 3, dropout: float = 0.0):  # noqa: ANN202 - (run, corpus)
    corpus = make_corpus()
    run = make_run(corpus, dropout=dropout)
    for step in range(steps):
        train_step(run, step)
    return run, corpus


def _save(run, folder: Path, step: int, keep_last: int = 3) -> Path:  # noqa: ANN001
    state = TrainState(step=step, tokens=step * 128, elapsed_s=1.5, data_rng=run.sampler.state())
    return save_checkpoint(folder, run.model, run.optimizer, state, keep_last, CPU)


def test_files_are_safetensors_and_json_only(tmp_path: Path) -> None:
    run, _ = _trained()
    folder = _save(run, tmp_path, 3)
    assert folder == tmp_path / "checkpoints" / "step-000003"
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors", "trainer.json"]
    for name in ("model.safetensors", "optimizer.safetensors"):
        raw = (folder / name).read_bytes()
        header = int.from_bytes(raw[:8], "little")
        assert json.loads(raw[8 : 8 + header])  # safetensors: u64 header length + JSON header + raw tensors
        assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # neither pickle nor torch.save zip
        with safe_open(str(folder / name), framework="pt") as f:
            assert list(f.keys())
    record = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
    assert record["step"] == 3 and record["format"] == 1
    tensors = load_file(str(folder / "optimizer.safetensors"))
    assert tensors["rng/data"].dtype == torch.uint8
    assert "state/decoder.blocks.0.ffn.up.weight/exp_avg_sq" in tensors
    # the weights are a model file `load_weights` reads (tied head stored once)
    fresh = build_model(run.spec, seed=123)
    load_weights(fresh, folder / "model.safetensors")
    assert torch.equal(fresh.head.weight, run.model.head.weight)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_state_is_restored_exactly(tmp_path: Path, dropout: float) -> None:
    run, corpus = _trained(dropout=dropout)
    folder = _save(run, tmp_path, 3)
    spec = run.spec.model_dump()
    other = build_run(spec_from_dict(spec), corpus, CPU)
    for step in range(7):  # another state: weights, moments, step counter and data order, all overwritten
        train_step(other, step)
    state = load_checkpoint(folder, other.model, other.optimizer)
    assert (state.step, state.tokens, state.elapsed_s) == (3, 384, 1.5)
    other.sampler.load_state(state.data_rng)
    for a, b in zip(run.model.state_dict().values(), other.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the next step is identical: same data, same moments, same step counter, same dropout masks
    torch.manual_seed(0)  # whatever the global RNG holds, dropout is seeded per step
    loss_a = train_step(run, 3)[0]
    torch.manual_seed(1)
    loss_b = train_step(other, 3)[0]
    assert loss_a.item() == loss_b.item()
    if dropout:  # and dropout is really on: the same step without it gives another loss
        plain = build_run(spec_from_dict({**spec, "dropout": 0.0}), corpus, CPU)
        load_checkpoint(folder, plain.model, plain.optimizer)
        plain.sampler.load_state(state.data_rng)
        assert train_step(plain, 3)[0].item() != loss_a.item()
    for a, b in zip(run.model.parameters(), other.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_only_the_last_checkpoints_are_kept_and_no_temporaries_remain(tmp_path: Path) -> None:
    run, _ = _trained(1)
    for step in (10, 20, 30, 40):
        _save(run, tmp_path, step, keep_last=2)
    assert [s for s, _ in checkpoint_steps(tmp_path)] == [30, 40]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000030", "step-000040"]


def _edit_record(folder: Path, **changes: object) -> None:
    """Change fields of trainer.json, which its own SHA-256 sums do not cover."""
    path = folder / "trainer.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(changes)
    path.write_text(json.dumps(record), encoding="utf-8")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: _truncate(f / "optimizer.safetensors"), "SHA-256"),
        (lambda f: f.joinpath("model.safetensors").unlink(), "model.safetensors"),
        (lambda f: f.joinpath("trainer.json").write_text("{", encoding="utf-8"), "trainer.json"),
        (lambda f: f.joinpath("trainer.json").write_text('{"format": 99}', encoding="utf-8"), "not a nima checkpoint"),
        (lambda f: _edit_record(f, step="x"), "step must be an integer >= 0"),
        (lambda f: _edit_record(f, step=-3), "step must be an integer >= 0"),
        (lambda f: _edit_record(f, step=2), "does not match the folder"),
        (lambda f: _edit_record(f, tokens=None), "tokens must be an integer"),
        (lambda f: _edit_record(f, elapsed_s="1"), "elapsed_s must be a number"),
        (lambda f: _edit_record(f, param_groups=None), "param_groups must be a list"),
    ],
    ids=[
        "truncated",
        "missing",
        "bad-json",
        "wrong-format",
        "step-text",
        "step-negative",
        "step-other",
        "tokens-null",
        "elapsed-text",
        "groups-missing",
    ],
)
def test_damage_is_a_train_error_naming_the_file(tmp_path: Path, damage, message: str) -> None:  # noqa: ANN001
    run, _ = _trained(1)
    folder = _save(run, tmp_path, 1)
    damage(folder)
    with pytest.raises(TrainError, match=message) as err:
        read_checkpoint(folder)
    assert str(folder) in str(err.value)


def test_a_checkpoint_of_another_model_is_a_train_error(tmp_path: Path) -> None:
    run, corpus = _trained(1)
    folder = _save(run, tmp_path, 1)
    spec = run.spec.model_dump()
    spec["d_model"] = 64
    other = build_run(spec_from_dict(spec), corpus, CPU)
    with pytest.raises(TrainError, match="does not match the model"):
        load_checkpoint(folder, other.model, other.optimizer)
