"""onnxruntime-genai loads a Nima bundle through its genai_config.json and decodes what PyTorch does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from bundle_helpers import invoke
from click.testing import Result

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
