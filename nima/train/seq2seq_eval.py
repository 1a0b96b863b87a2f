"""Exact match of an encoder-decoder on the validation pairs: greedy decoding against the target.

A pair counts when the greedy output equals its labels token for token, the end token
included (so stopping early or running on both miss); targets cut at the training seq_len
compare on the cut. Every rank decodes its share of the same fixed rows the validation loss
uses, and the counts are summed over ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nima.train.batches import IGNORE_INDEX
from nima.train.distributed import all_reduce_sum
from nima.train.greedy import greedy_decode, until_end

if TYPE_CHECKING:
    from nima.train.loop import Run


@torch.no_grad()
def exact_match(run: Run) -> dict[str, float]:
    """{"exact_match": share of validation pairs whose greedy decoding equals the target}."""
    tr, world = run.spec.training, run.world
    n_rows = tr.eval_batches * tr.batch_size * tr.grad_accum * world.size
    batches = run.corpus.val_batches(run.spec.train_seq_len, n_rows, tr.batch_size, world.rank, world.size)
    special = run.corpus.special
    model = run.model
    unshard = getattr(model, "unshard", None)  # FSDP2: encode/decode bypass the root's forward hook
    if unshard is not None:
        unshard()
    counts = torch.zeros(2, dtype=torch.float64, device=world.device)  # (matches, pairs)
    model.eval()
    try:
        for batch in batches:
            labels = batch["labels"]  # (B, T)
            with run.precision.autocast():
                generated = greedy_decode(
                    model,
                    batch["input_ids"].to(world.device),
                    batch["attention_mask"].to(world.device),
                    special.decoder_start,
                    special.eos,
                    labels.shape[1],
                ).cpu()  # (B, N)
            for row, want in zip(generated.tolist(), labels.tolist(), strict=True):
                want = [t for t in want if t != IGNORE_INDEX]
                counts[0] += until_end(row, special.eos)[: len(want)] == want
            counts[1] += len(labels)
    finally:
        model.train()
        if unshard is not None:
            model.reshard()
    matches, pairs = all_reduce_sum(counts, world).tolist()
    return {"exact_match": matches / max(pairs, 1.0)}
