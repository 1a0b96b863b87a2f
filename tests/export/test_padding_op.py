"""`nima::padding_allowed` against the rule it stands for, in torch and as ONNX Runtime runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from nima.export.targets.ort.padding_op import TRANSLATION_TABLE, padding_allowed


def left_padded_mask(b: int, total: int, seed: int) -> torch.Tensor:
    """(B, total) int64: each row some zeros (possibly none), then ones; at least one real token."""
    pads = torch.randint(0, total, (b,), generator=torch.Generator().manual_seed(seed))
    return (torch.arange(total)[None, :] >= pads[:, None]).long()


def reference(mask: torch.Tensor, t: int) -> torch.Tensor:
    """A real query sees the real keys; a padding query sees every key (loop over every entry)."""
    b, total = mask.shape
    out = torch.zeros(b, 1, t, total, dtype=torch.bool)
    for row in range(b):
        for q in range(t):
            query_is_real = bool(mask[row, total - t + q])
            for k in range(total):
                out[row, 0, q, k] = bool(mask[row, k]) or not query_is_real
    return out


@pytest.mark.parametrize(("total", "t"), [(7, 7), (9, 1), (9, 3)])
def test_torch_op_follows_the_rule(total: int, t: int) -> None:
    mask = left_padded_mask(4, total, seed=total + t)
    ids = torch.zeros(4, t, dtype=torch.long)
    assert torch.equal(padding_allowed(mask, ids), reference(mask, t))


class Allowed(torch.nn.Module):
    def forward(self, mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return padding_allowed(mask, ids)


def test_onnx_translation_follows_the_rule(tmp_path: Path) -> None:
    """Exported once with dynamic sizes, the graph is right for prefill and cached-step shapes alike."""
    mask, ids = left_padded_mask(3, 8, seed=0), torch.zeros(3, 8, dtype=torch.long)
    batch, total, new = torch.export.Dim("batch"), torch.export.Dim("total"), torch.export.Dim("new")
    path = tmp_path / "allowed.onnx"
    torch.onnx.export(
        Allowed().eval(),
        (mask, ids),
        str(path),
        dynamo=True,
        custom_translation_table=TRANSLATION_TABLE,
        dynamic_shapes=({0: batch, 1: total}, {0: batch, 1: new}),
        input_names=["mask", "ids"],
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, total_len, t, seed in [(3, 8, 8, 1), (2, 12, 1, 2), (4, 10, 3, 3)]:
        m = left_padded_mask(b, total_len, seed)
        (got,) = session.run(None, {"mask": m.numpy(), "ids": np.zeros((b, t), np.int64)})
        np.testing.assert_array_equal(got, reference(m, t).numpy())
