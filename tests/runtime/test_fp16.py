"""fp16 bundles in the runtime: the cache and logits are half precision, and greedy decoding still
follows the fp32 PyTorch model's full forward passes (wide logits keep the choices far from ties),
through the batch loop and the single-row loop, on portable and `ort` graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_support import make_spec, torch_greedy

from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import Generator

PROMPTS = [[5, 9, 2, 33, 17, 8, 40], [11, 3]]
WIDE = {"d_model": 64, "attention": {"n_heads": 4, "n_kv_heads": 2}}  # head size 16: the ort kernel's minimum


@pytest.fixture(scope="module")
def fp16_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, DecoderLM]]:
    root = tmp_path_factory.mktemp("fp16-bundles")
    spec = make_spec("llama", name="rt-fp16", **WIDE)
    model = build_model(spec, seed=4)
    source = save_build(model, spec, root / "src")
    out = {}
    for target in ("portable", "ort"):
        # no export check: its fp16 tolerance is for trained-scale logits, not these wide ones
        bundle = export_bundle(source, root / target, dtype="fp16", target=target, verify=False).out
        out[target] = (bundle, model.eval())
    return out


@pytest.mark.parametrize("target", ["portable", "ort"])
def test_fp16_greedy_follows_pytorch(target: str, fp16_bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, model = fp16_bundles[target]
    gen = Generator(path)
    assert gen.session.kv_dtype == np.float16
    expected = [torch_greedy(model, prompt, 24) for prompt in PROMPTS]
    assert len(set(expected[0])) > 5, "a degenerate reference would make the comparison weak"
    assert [r.token_ids for r in gen.generate(PROMPTS, max_new_tokens=24, do_sample=False)] == expected
    assert list(gen.stream_tokens(PROMPTS[0], max_new_tokens=24, do_sample=False)) == expected[0]
