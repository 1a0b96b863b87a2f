"""Greedy decoding of an encoder-decoder in PyTorch, with the self-attention and cross-attention caches.

Used to score exact match during training and as the reference the exported ONNX graphs are
held to. The encoder runs once; the first decoder step computes the cross-attention
keys/values from its output, and every later step reuses them and feeds one new token.
"""

from __future__ import annotations

import torch

from nima.builders.models import EncoderDecoderLM


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoderLM,
    input_ids: torch.Tensor,  # (B, S) source ids
    attention_mask: torch.Tensor,  # (B, S), 1 = real source token
    start_id: int,
    end_id: int,
    max_new_tokens: int,
) -> torch.Tensor:
    """Generated ids (B, N), N <= max_new_tokens; after a row's ``end_id`` the row holds ``end_id``."""
    b = input_ids.shape[0]
    memory = model.encode(input_ids, attention_mask)  # (B, S, d_model)
    step = torch.full((b, 1), start_id, dtype=torch.long, device=input_ids.device)  # (B, 1)
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    past, cross = None, None
    out: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        mask = torch.ones(b, t + 1, dtype=torch.long, device=input_ids.device)  # (B, past + 1)
        logits, past, cross = model.decode(
            step, memory if cross is None else None, attention_mask, mask, None, past, cross
        )  # (B, 1, V)
        token = logits[:, -1].argmax(-1).masked_fill(done, end_id)  # (B,)
        out.append(token)
        done |= token == end_id
        if bool(done.all()):
            break
        step = token[:, None]
    return torch.stack(out, dim=1)  # (B, N)


def until_end(ids: list[int], end_id: int) -> list[int]:
    """``ids`` up to and including the first ``end_id`` (all of them if there is none)."""
    return ids[: ids.index(end_id) + 1] if end_id in ids else ids
