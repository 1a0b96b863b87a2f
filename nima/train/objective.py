"""What the model is trained to predict, per architecture: the one place the loop meets the model's API
(each family's row in `nima.train.families` names its objective).

An objective takes the (possibly wrapped) model and a batch and returns the summed token loss
and the number of tokens it covers, so micro-batches, ranks and evaluation batches combine
by plain sums. The decoder objective is next-token prediction; the encoder-decoder objective
is next-token prediction of the target given the source, with teacher forcing (batches from
`nima.train.pair_batches`), padding ignored on both sides.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nima.train.batches import IGNORE_INDEX, Batch

Objective = Callable[[nn.Module, Batch], tuple[torch.Tensor, int]]


def causal_lm_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of each next token (nats) and the token count."""
    logits, _ = model(batch["input_ids"])  # (B, T, V)
    labels = batch["labels"]  # (B, T)
    # fp32 log-softmax: under autocast the logits are bf16/fp16, too coarse for the loss.
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum")
    return loss, labels.numel()


def seq2seq_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of each real target token given the source and the target so far."""
    labels = batch["labels"]  # (B, T), IGNORE_INDEX at padding
    real = labels != IGNORE_INDEX  # (B, T)
    # The head runs only where a label counts (padding is often a third of a target batch).
    logits, _, _ = model(
        batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"], batch["decoder_attention_mask"], real
    )  # (N, V)
    loss = F.cross_entropy(logits.float(), labels[real], reduction="sum")
    return loss, int(real.sum())
